"""Actor and critic networks composed from a torso and a head, built from `network=` configs."""

from typing import Any, Callable

import distrax
import flax.linen as nn
import hydra
import jax
from omegaconf import DictConfig

from stoix.base_types import EnvSpec, Observation


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


def make_critic(network_cfg: DictConfig) -> FeedForwardCritic:
    """Builds the state-value critic from `network.critic_network`."""
    return FeedForwardCritic(
        torso=_instantiate(network_cfg.critic_network.pre_torso),
        critic_head=_instantiate(network_cfg.critic_network.critic_head),
    )


ApplyFn = Callable[..., Any]
