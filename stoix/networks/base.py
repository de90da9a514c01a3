"""Actor, critic and Q networks composed from a torso and a head, built from `network=` configs."""

from typing import Any, Callable

import distrax
import flax.linen as nn
import hydra
import jax
from omegaconf import DictConfig

from stoix.base_types import EnvSpec, Observation
from stoix.networks.heads import QNetworkOutput


class FeedForwardActor(nn.Module):
    """Observation -> torso -> policy head (a distrax distribution)."""

    torso: nn.Module
    action_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation) -> distrax.Distribution:
        features = self.torso(observation.agent_view)
        return self.action_head(features, observation.action_mask)


class FeedForwardCritic(nn.Module):
    """Observation -> torso -> value head."""

    torso: nn.Module
    critic_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation) -> jax.Array:
        return self.critic_head(self.torso(observation.agent_view))


class FeedForwardQNetwork(nn.Module):
    """Observation -> torso -> Q head (`QValues`, `CategoricalQValues` or `QuantileQValues`).

    ``apply(params, obs)`` is deterministic (noisy layers use their mean weights);
    ``apply(params, obs, rngs={"noise": key})`` samples NoisyNets noise.
    """

    torso: nn.Module
    q_head: nn.Module

    @nn.compact
    def __call__(self, observation: Observation, train: bool = False) -> QNetworkOutput:
        # Only a BatchNorm torso cares about `train`; the others keep their one-argument call.
        if train:
            features = self.torso(observation.agent_view, train=True)
        else:
            features = self.torso(observation.agent_view)
        return self.q_head(features, observation.action_mask)


def _instantiate(node: DictConfig, **kwargs: Any) -> nn.Module:
    return hydra.utils.instantiate(node, **kwargs)


def make_actor(network_cfg: DictConfig, spec: EnvSpec) -> FeedForwardActor:
    """Builds the actor from `network.actor_network` for this env's action space."""
    head_kwargs: dict[str, Any] = {"action_dim": spec.num_actions}
    target = str(network_cfg.actor_network.action_head._target_)
    if target.endswith("TanhNormalHead"):
        head_kwargs.update(minimum=spec.action_minimum, maximum=spec.action_maximum)
    return FeedForwardActor(
        torso=_instantiate(network_cfg.actor_network.pre_torso),
        action_head=_instantiate(network_cfg.actor_network.action_head, **head_kwargs),
    )


def make_critic(network_cfg: DictConfig, **head_kwargs: Any) -> FeedForwardCritic:
    """Builds the critic from `network.critic_network`: a state value, or with a
    `DiscreteQHead` and `action_dim` in `head_kwargs` the action values Q(s, ·)."""
    return FeedForwardCritic(
        torso=_instantiate(network_cfg.critic_network.pre_torso),
        critic_head=_instantiate(network_cfg.critic_network.critic_head, **head_kwargs),
    )


def make_q_network(network_cfg: DictConfig, spec: EnvSpec) -> FeedForwardQNetwork:
    """Builds the Q network from `network.q_network` for this env's discrete actions.

    Args:
        network_cfg: The `network` config group, with `q_network.pre_torso` and
            `q_network.q_head`.
        spec: The environment's spec; its `num_actions` sizes the head.

    Returns:
        The unbound network.

    Raises:
        ValueError: If the environment's actions are not discrete.
    """
    if spec.action_kind != "discrete":
        raise ValueError(
            f"Q networks need discrete actions, but the environment's are {spec.action_kind}"
        )
    return FeedForwardQNetwork(
        torso=_instantiate(network_cfg.q_network.pre_torso),
        q_head=_instantiate(network_cfg.q_network.q_head, action_dim=spec.num_actions),
    )


ApplyFn = Callable[..., Any]
