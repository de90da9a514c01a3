"""A deterministic tanh actor and a state-action critic, for DDPG-style continuous control.

Built from `network.actor_network` / `network.critic_network` configs whose heads are
`DeterministicTanhHead` and `ScalarCriticHead` (e.g. `network=mlp_pqn_continuous`).
"""

from typing import Any, Sequence

import flax.linen as nn
import hydra
import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import EnvSpec, Observation
from stoix.networks.layers import orthogonal


class DeterministicTanhHead(nn.Module):
    """One action per state, squashed by tanh into [minimum, maximum]."""

    action_dim: int
    minimum: Sequence[float] = (-1.0,)
    maximum: Sequence[float] = (1.0,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # A small output scale starts the policy near the middle of the action range, where
        # tanh is far from saturating and the critic's gradient can still move it.
        pre_tanh = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01))(x)
        low = jnp.asarray(self.minimum, jnp.float32)
        high = jnp.asarray(self.maximum, jnp.float32)
        return low + (jnp.tanh(pre_tanh) + 1.0) * (high - low) / 2.0


class DeterministicActor(nn.Module):
    """Observation -> torso -> action [..., A]."""

    torso: nn.Module
    action_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation) -> jax.Array:
        return self.action_head(self.torso(observation.agent_view))


class StateActionCritic(nn.Module):
    """(observation, action) -> torso over their concatenation -> Q(s, a) [...]."""

    torso: nn.Module
    critic_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation, action: jax.Array) -> jax.Array:
        view = observation.agent_view
        view = view.reshape(view.shape[: action.ndim - 1] + (-1,))
        return self.critic_head(self.torso(jnp.concatenate([view, action], axis=-1)))


def _instantiate(node: DictConfig, **kwargs: Any) -> nn.Module:
    return hydra.utils.instantiate(node, **kwargs)


def make_deterministic_actor(network_cfg: DictConfig, spec: EnvSpec) -> DeterministicActor:
    """Builds the actor from `network.actor_network`, its head bounded by the env's actions.

    Raises:
        ValueError: If the environment's actions are not continuous.
    """
    if spec.action_kind != "continuous":
        raise ValueError(
            f"deterministic actors need continuous actions, but the environment's are "
            f"{spec.action_kind}"
        )
    head = _instantiate(
        network_cfg.actor_network.action_head,
        action_dim=spec.num_actions,
        minimum=spec.action_minimum,
        maximum=spec.action_maximum,
    )
    return DeterministicActor(
        torso=_instantiate(network_cfg.actor_network.pre_torso), action_head=head
    )


def make_state_action_critic(network_cfg: DictConfig, **head_kwargs: Any) -> StateActionCritic:
    """Builds Q(s, a) from `network.critic_network`; `head_kwargs` size the head (e.g. the
    number of atoms of a categorical critic, which the system's config owns)."""
    return StateActionCritic(
        torso=_instantiate(network_cfg.critic_network.pre_torso),
        critic_head=_instantiate(network_cfg.critic_network.critic_head, **head_kwargs),
    )
