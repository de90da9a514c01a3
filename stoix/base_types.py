"""Typed containers that every Stoix system speaks.

Shapes in comments use: T rollout length, N environments, A action dimension.
"""

from typing import Any, Callable, Dict, NamedTuple, Protocol, Tuple

import chex
import jax.numpy as jnp
from flax import struct

Array = chex.Array
PRNGKey = chex.PRNGKey
Params = Any
OptState = Any
EnvState = Any
Action = Array


class StepType:
    """Where a timestep sits in its episode (stored as int8)."""

    FIRST = 0
    MID = 1
    # The episode ended in a terminal state: do not bootstrap from the next observation.
    TERMINATED = 2
    # The episode was cut short (time limit): bootstrap from the true final observation.
    TRUNCATED = 3


class Observation(NamedTuple):
    """What the agent sees.

    agent_view: the array the networks consume, e.g. (obs_dim,) or (H, W, C).
    action_mask: (num_actions,) booleans for discrete envs; all True when the env has no mask.
    step_count: () steps taken in the current episode.
    """

    agent_view: Array
    action_mask: Array
    step_count: Array


class EpisodeMetrics(NamedTuple):
    """Running and final statistics of the current episode, kept by the metrics wrapper.

    episode_return / episode_length hold the totals of the episode that ended at this step
    when is_terminal_step is True, and the running totals otherwise.
    """

    episode_return: Array  # ()
    episode_length: Array  # ()
    is_terminal_step: Array  # () bool


class TimeStep(NamedTuple):
    """One transition as returned by `reset` and `step` of every Stoix environment.

    After an auto-reset, `observation` is the first observation of the new episode and
    `next_observation` keeps the true last observation of the episode that just ended: value
    targets bootstrap from `next_observation` on truncation and never on termination.
    """

    step_type: Array  # () int8, one of StepType
    reward: Array  # () float32
    discount: Array  # () float32, 0.0 on termination, 1.0 otherwise
    observation: Observation
    next_observation: Observation
    metrics: EpisodeMetrics

    def first(self) -> Array:
        return self.step_type == StepType.FIRST

    def last(self) -> Array:
        return self.step_type >= StepType.TERMINATED

    def terminated(self) -> Array:
        return self.step_type == StepType.TERMINATED

    def truncated(self) -> Array:
        return self.step_type == StepType.TRUNCATED


class Environment(Protocol):
    """The one environment interface of Stoix: pure functions over an explicit state.

    Every env a system is built with meets it (`stoix.wrappers.episode.EpisodeEnv` over a suite
    adapter, `stoix.wrappers.envpool.EnvpoolEnv`); systems vmap `reset` and `step` over envs.
    """

    spec: "EnvSpec"  # what networks are built for and configs are checked against
    max_episode_steps: int  # episodes are truncated at this many steps

    def reset(self, key: PRNGKey) -> Tuple[EnvState, TimeStep]: ...

    def step(self, state: EnvState, action: Action) -> Tuple[EnvState, TimeStep]: ...


@struct.dataclass
class EnvSpec:
    """Static description of an environment, used to build networks and validate configs."""

    observation_shape: Tuple[int, ...] = struct.field(pytree_node=False)
    action_kind: str = struct.field(pytree_node=False)  # "discrete" | "continuous"
    num_actions: int = struct.field(pytree_node=False)  # discrete: choices; continuous: A
    action_minimum: Tuple[float, ...] | None = struct.field(pytree_node=False, default=None)
    action_maximum: Tuple[float, ...] | None = struct.field(pytree_node=False, default=None)
    max_episode_steps: int = struct.field(pytree_node=False, default=1000)


class OnlineAndTarget(NamedTuple):
    online: Params
    target: Params


class ActorCriticParams(NamedTuple):
    actor_params: Params
    critic_params: Params


class ActorCriticOptStates(NamedTuple):
    actor_opt_state: OptState
    critic_opt_state: OptState


class Transition(NamedTuple):
    """One env step as a replay buffer stores it ([N, T] when added, [B, n] when sampled)."""

    observation: Observation  # as the env gave it (replay systems normalise when sampling)
    action: Array  # () int32 for discrete actions, [A] float32 for continuous ones
    reward: Array  # () float32
    terminated: Array  # () bool: no bootstrap from next_observation
    episode_end: Array  # () bool: terminated or truncated; n-step sums stop here
    next_observation: Observation  # the true next observation, also at a truncation


class NStepBatch(NamedTuple):
    """Sampled sequences folded into n-step transitions (see `stoix.utils.replay`)."""

    observation: Observation  # [B] s_t
    action: Array  # [B] or [B, A] a_t
    reward: Array  # [B] discounted reward sum over the k ≤ n steps
    discount: Array  # [B] γ^k, 0 when the episode terminated within them
    next_observation: Observation  # [B] s_{t+k}


class TrainMetrics(NamedTuple):
    """Fixed-shape summary of one update, so the compiled program never changes with the data.

    Episode statistics cover the episodes that ended during the update's rollout; loss_info is
    the system's own typed loss record, averaged over epochs and minibatches.
    """

    episode_return_sum: Array
    episode_return_max: Array
    episode_return_min: Array
    episode_length_sum: Array
    num_episodes: Array
    loss_info: Any


def summarise_episodes(
    episode_end: Array, episode_return: Array, episode_length: Array, loss_info: Any
) -> TrainMetrics:
    """TrainMetrics of one update from its rollout's per-step episode records ([T, N] each);
    only the steps that ended an episode count."""
    return TrainMetrics(
        episode_return_sum=jnp.sum(jnp.where(episode_end, episode_return, 0.0)),
        episode_return_max=jnp.max(jnp.where(episode_end, episode_return, -jnp.inf)),
        episode_return_min=jnp.min(jnp.where(episode_end, episode_return, jnp.inf)),
        episode_length_sum=jnp.sum(jnp.where(episode_end, episode_length, 0)),
        num_episodes=jnp.sum(episode_end),
        loss_info=loss_info,
    )


# A system's learner state is its own NamedTuple; the runner only needs it to be a pytree.
LearnerState = Any

# One evaluation period of learning for a single replica: (state) -> (state, metrics[U]).
LearnFn = Callable[[LearnerState], Tuple[LearnerState, TrainMetrics]]
# Maps actor params and an observation to a distrax distribution (or greedy action values).
ActorApply = Callable[[Params, Observation], Any]
# Turns actor params, an observation and a key into an action; greedy or stochastic.
ActFn = Callable[[Params, Observation, PRNGKey], Action]

ExtraMetrics = Dict[str, Array]


def zeros_like_metrics() -> EpisodeMetrics:
    return EpisodeMetrics(
        episode_return=jnp.zeros((), jnp.float32),
        episode_length=jnp.zeros((), jnp.int32),
        is_terminal_step=jnp.zeros((), bool),
    )
