"""Types of the on-policy actor-critic base (`stoix.systems.on_policy_base`): PPO's, and those
of every member built on it."""

from typing import NamedTuple

import jax

from stoix.base_types import (
    ActorCriticOptStates,
    ActorCriticParams,
    EnvState,
    Observation,
    PRNGKey,
)
from stoix.utils.running_statistics import RunningStatistics


class PPOLearnerState(NamedTuple):
    """One replica's learner state; leaves gain [D, S, B] axes in the runner."""

    # V-MPO keeps its Lagrange duals here too (vmpo_types.VMPOParams / VMPOOptStates: the same
    # actor and critic fields first, so the shared rollout and GAE read them unchanged).
    params: ActorCriticParams
    opt_states: ActorCriticOptStates
    key: PRNGKey
    env_state: EnvState  # [N]
    observation: Observation  # [N] what the next rollout acts on first
    obs_stats: RunningStatistics  # observation normalisation (left at identity when disabled)


class PPOTransition(NamedTuple):
    """One rollout step of N envs (time-major [T, N] after the rollout scan)."""

    observation: Observation
    action: jax.Array  # [N] or [N, A]
    log_prob: jax.Array  # [N]
    reward: jax.Array  # [N]
    discount: jax.Array  # [N] 0 on termination
    episode_end: jax.Array  # [N] terminated or truncated
    next_observation: Observation  # true next observation (final one at episode ends)
    episode_return: jax.Array  # [N] valid where is_terminal_step
    episode_length: jax.Array  # [N]


class PPOLossInfo(NamedTuple):
    actor_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array
