"""On-device replay shared by every replay-based system: sizing, adding, n-step folding, checks,
and the replay loop itself (act into the buffer, then learn from sampled batches).

Each replica keeps its own flashbax trajectory buffer over its own envs; a buffer of
`system.buffer_size` transitions per seed is split evenly over the replicas and their envs.
Sampling draws sequences of n consecutive steps, which `n_step_batch` folds into one n-step
transition each, so n-step returns never cross an episode end.

This module is mechanics only; how a replay actor-critic's parts are assembled for the runner
lives in `stoix/systems/replay_base.py`.
"""

from typing import Any, Callable, NamedTuple, Tuple

import flashbax as fbx
import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import (
    ActFn,
    Action,
    Environment,
    EpisodeMetrics,
    NStepBatch,
    Observation,
    PRNGKey,
    TimeStep,
    TrainMetrics,
    Transition,
    summarise_episodes,
)
from stoix.errors import ConfigError
from stoix.parallel import pmean_replicas
from stoix.utils.config import RunPlan, check_range
from stoix.utils.multistep import n_step_target
from stoix.utils.rollout import RolloutEnd, env_rollout
from stoix.utils.running_statistics import (
    RunningStatistics,
    init_statistics,
    observe,
    update_statistics,
)


def make_trajectory_buffer(
    plan: RunPlan,
    buffer_size: int,
    batch_size: int,
    sequence_length: int,
    prioritised: bool = False,
    priority_exponent: float = 0.6,
) -> Any:
    """One replica's buffer: `buffer_size` is per seed, `batch_size` per replica."""
    common = dict(
        add_batch_size=plan.envs_per_replica,
        sample_batch_size=batch_size,
        sample_sequence_length=sequence_length,
        period=1,
        min_length_time_axis=sequence_length,
        max_length_time_axis=buffer_size // plan.num_replicas // plan.envs_per_replica,
    )
    if prioritised:
        return fbx.make_prioritised_trajectory_buffer(**common, priority_exponent=priority_exponent)
    return fbx.make_trajectory_buffer(**common)


def add_rollout(buffer: Any, buffer_state: Any, traj: Any) -> Any:
    """Adds a time-major [T, N] rollout; flashbax stores [N, T]."""
    return buffer.add(buffer_state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj))


def n_step_batch(sequences: Transition, gamma: float) -> NStepBatch:
    """[B, n] sampled sequences → one n-step transition each (see `n_step_target`)."""
    target = n_step_target(sequences.reward, sequences.terminated, sequences.episode_end, gamma)
    batch_index = jnp.arange(target.reward.shape[0])
    return NStepBatch(
        observation=jax.tree.map(lambda x: x[:, 0], sequences.observation),
        action=sequences.action[:, 0],
        reward=target.reward,
        discount=target.discount,
        next_observation=jax.tree.map(
            lambda x: x[batch_index, target.last_index], sequences.next_observation
        ),
    )


# CHECKS. `validate_replay` is what every n-step replay system runs; the pieces after it let a
# system that samples other sequences (AWR's `system.sequence_length`) run the same checks.


def validate_replay(cfg: DictConfig, plan: RunPlan) -> None:
    """The checks every replay system needs on `system.batch_size`, `buffer_size`, `n_step`,
    `warmup_steps` and `gradient_steps_per_update`, each failing with one line."""
    for key in ("batch_size", "buffer_size", "n_step", "gradient_steps_per_update"):
        check_range(cfg, f"system.{key}", 1, float("inf"))
    check_range(cfg, "system.warmup_steps", 0, float("inf"))
    check_batch_split(cfg, plan)
    check_buffer_length(cfg, plan, "n_step")
    check_warmup_samples(cfg, "n_step")


def check_batch_split(cfg: DictConfig, plan: RunPlan) -> None:
    """`system.batch_size` (per seed) splits evenly over the replicas."""
    batch_size = int(cfg.system.batch_size)
    if batch_size % plan.num_replicas:
        raise ConfigError(
            f"system.batch_size={batch_size} is not divisible by {plan.num_devices} device(s) × "
            f"arch.update_batch_size={plan.update_batch_size}"
        )


def check_buffer_length(cfg: DictConfig, plan: RunPlan, sequence_key: str) -> None:
    """Each env's share of the buffer holds a sampled sequence, the warm-up and a rollout."""
    sys_cfg = cfg.system
    time_axis = int(sys_cfg.buffer_size) // plan.num_replicas // plan.envs_per_replica
    needed = max(int(sys_cfg[sequence_key]), int(sys_cfg.warmup_steps), plan.rollout_length)
    if time_axis < needed:
        raise ConfigError(
            f"system.buffer_size={int(sys_cfg.buffer_size):,} holds only {time_axis} steps per "
            f"env ({plan.total_num_envs} envs); it needs at least {needed} (the largest of "
            f"system.{sequence_key}, system.warmup_steps and system.rollout_length)"
        )


def check_warmup_samples(cfg: DictConfig, sequence_key: str) -> None:
    """The warm-up stores at least one sampled sequence's worth of steps."""
    sys_cfg = cfg.system
    if int(sys_cfg.warmup_steps) < int(sys_cfg[sequence_key]):
        raise ConfigError(
            f"system.warmup_steps={sys_cfg.warmup_steps} must be at least "
            f"system.{sequence_key}={sys_cfg[sequence_key]}, so the first batch can be sampled"
        )


# THE REPLAY LOOP: act, store, replay.


class ReplayLearnerState(NamedTuple):
    """One replica's learner state; leaves gain [D, S, B] axes in the runner."""

    params: Any  # the system's own parameter container (actor, critics, targets, duals)
    opt_states: Any  # ... and its optimiser states
    buffer_state: Any  # flashbax trajectory buffer state of raw (unnormalised) transitions
    key: PRNGKey
    env_state: Any  # [N]
    observation: Observation  # [N] what the next rollout acts on first
    obs_stats: RunningStatistics  # shared by the replicas of a seed; checkpointed
    env_steps: jax.Array  # () int32, env steps taken by this replica after the warm-up
    gradient_steps: jax.Array  # () int32 (drives delayed actor updates)


class ReplayLoop(NamedTuple):
    """The static shape of one update: a rollout, then gradient steps on replayed batches."""

    rollout_length: int
    gradient_steps_per_update: int
    warmup_steps: int  # steps per env stored before learning
    normalise_observations: bool


def replay_loop(cfg: DictConfig, plan: RunPlan) -> ReplayLoop:
    """The loop as `system.*` configures it."""
    sys_cfg = cfg.system
    return ReplayLoop(
        rollout_length=plan.rollout_length,
        gradient_steps_per_update=int(sys_cfg.gradient_steps_per_update),
        warmup_steps=int(sys_cfg.warmup_steps),
        normalise_observations=bool(sys_cfg.normalise_observations),
    )


# (state, key) -> (state, loss info): one optimiser step on one replayed batch
GradientStep = Callable[[ReplayLearnerState, PRNGKey], Tuple[ReplayLearnerState, Any]]
# (raw observation [N], key) -> actions [N]: how a rollout acts
RawActFn = Callable[[Observation, PRNGKey], Action]


def observe_batch(
    stats: RunningStatistics, batch: NStepBatch, enabled: bool, reward_scale: float
) -> NStepBatch:
    """A sampled batch as the learner sees it: normalised observations, scaled rewards."""
    return batch._replace(
        observation=observe(stats, batch.observation, enabled),
        next_observation=observe(stats, batch.next_observation, enabled),
        reward=reward_scale * batch.reward,
    )


def sample_n_step_batch(
    buffer: Any,
    state: "ReplayLearnerState",
    key: PRNGKey,
    gamma: float,
    normalise_observations: bool,
    reward_scale: float,
) -> NStepBatch:
    """One replayed batch as the learner sees it: sampled sequences folded into n-step
    transitions, observations normalised with the replica's current statistics, rewards scaled."""
    sequences = buffer.sample(state.buffer_state, key).experience
    return observe_batch(
        state.obs_stats, n_step_batch(sequences, gamma), normalise_observations, reward_scale
    )


def collect(
    env: Environment,
    act: RawActFn,
    key: PRNGKey,
    env_state: Any,
    observation: Observation,
    length: int,
    keys_per_step: int = 1,
) -> Tuple[PRNGKey, Any, Observation, Transition, EpisodeMetrics]:
    """Steps all envs `length` times with `act`; returns time-major [T, N] transitions.

    `act` gets one fresh key per step, or a tuple of `keys_per_step` keys (see `env_rollout`).
    """

    def act_step(carry: Tuple[()], obs: Observation, act_key: PRNGKey):
        action = act(obs, act_key)
        return carry, action, action

    def record(obs: Observation, action: Action, timestep: TimeStep):
        transition = Transition(
            observation=obs,
            action=action,
            reward=timestep.reward,
            terminated=timestep.terminated(),
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
        )
        return transition, timestep.metrics

    end, (traj, metrics) = env_rollout(
        env,
        act_step,
        record,
        RolloutEnd(key, env_state, observation, ()),
        length,
        keys_per_step=keys_per_step,
    )
    return end.key, end.env_state, end.observation, traj, metrics


class ReplicaKeys(NamedTuple):
    """The keys a replica's first state is built from."""

    reset: PRNGKey  # its envs' resets
    warmup: PRNGKey  # the warm-up rollout
    state: PRNGKey  # the learner state's key


class WarmStart(NamedTuple):
    """A replica's envs after their reset and warm-up, and the buffer the warm-up filled."""

    env_state: Any
    observation: Observation
    buffer_state: Any


def warm_up(
    env: Environment,
    buffer: Any,
    warmup_steps: int,
    num_envs: int,
    keys: ReplicaKeys,
    example_action: Action,
    warmup_act: RawActFn,
    keys_per_step: int = 1,
) -> WarmStart:
    """Resets the replica's envs and fills its buffer with `warmup_steps` steps of `warmup_act`
    per env; `example_action` [N] gives the stored action's shape and dtype. `keys_per_step`: as
    in `collect`."""
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(keys.reset, num_envs))
    example = Transition(
        timestep.observation,
        example_action,
        timestep.reward,
        timestep.terminated(),
        timestep.last(),
        timestep.next_observation,
    )
    buffer_state = buffer.init(jax.tree.map(lambda x: x[0], example))
    observation = timestep.observation
    if warmup_steps > 0:
        _, env_state, observation, traj, _ = collect(
            env, warmup_act, keys.warmup, env_state, observation, warmup_steps, keys_per_step
        )
        buffer_state = add_rollout(buffer, buffer_state, traj)
    return WarmStart(env_state, observation, buffer_state)


def start_replica(
    env: Environment,
    buffer: Any,
    loop: ReplayLoop,
    num_envs: int,
    params: Any,
    opt_states: Any,
    keys: ReplicaKeys,
    example_action: Action,
    warmup_act: RawActFn,
) -> ReplayLearnerState:
    """An actor-critic replica's first state after `warm_up` (`loop.warmup_steps` steps).

    The observation statistics start empty: they are shared by the replicas of a seed, the
    runner initialises each replica on its own (no collective runs at initialisation), and the
    first update's rollout brings them in line.
    """
    start = warm_up(env, buffer, loop.warmup_steps, num_envs, keys, example_action, warmup_act)
    return ReplayLearnerState(
        params=params,
        opt_states=opt_states,
        buffer_state=start.buffer_state,
        key=keys.state,
        env_state=start.env_state,
        observation=start.observation,
        obs_stats=init_statistics(env.spec.observation_shape),
        env_steps=jnp.zeros((), jnp.int32),
        gradient_steps=jnp.zeros((), jnp.int32),
    )


def init_replay_state(
    env: Environment,
    buffer: Any,
    loop: ReplayLoop,
    num_envs: int,
    params: Any,
    opt_states: Any,
    random_action: Callable[[PRNGKey, int], Action],
    replica_key: PRNGKey,
) -> ReplayLearnerState:
    """A replica's first state whose buffer holds `loop.warmup_steps` uniformly random steps
    per env (see `start_replica`)."""
    keys = ReplicaKeys(*jax.random.split(replica_key, 3))
    return start_replica(
        env,
        buffer,
        loop,
        num_envs,
        params,
        opt_states,
        keys,
        random_action(keys.warmup, num_envs),
        lambda obs, key: random_action(key, num_envs),
    )


def replay_update(
    env: Environment,
    buffer: Any,
    loop: ReplayLoop,
    act: ActFn,
    acting_params: Callable[[Any], Any],
    gradient_step: GradientStep,
    state: ReplayLearnerState,
) -> Tuple[ReplayLearnerState, TrainMetrics]:
    """One update: a rollout with the current policy into the buffer, then gradient steps.

    `act` acts on observations as the networks see them, with `acting_params(state.params)`.
    The rollout acts on observations normalised with the statistics frozen at its start; the
    buffer keeps raw observations, and the gradient steps normalise the sampled ones with the
    refreshed statistics, so old and new data are always seen on the same scale.
    """
    policy, stats = acting_params(state.params), state.obs_stats
    key, env_state, observation, traj, episodes = collect(
        env,
        lambda obs, key: act(policy, observe(stats, obs, loop.normalise_observations), key),
        state.key,
        state.env_state,
        state.observation,
        loop.rollout_length,
    )
    if loop.normalise_observations:
        stats = update_statistics(stats, traj.observation.agent_view, pmean_replicas)
    key, steps_key = jax.random.split(key)
    state = state._replace(
        key=key,
        env_state=env_state,
        observation=observation,
        obs_stats=stats,
        buffer_state=add_rollout(buffer, state.buffer_state, traj),
        env_steps=state.env_steps + loop.rollout_length * traj.reward.shape[1],
    )
    state, info = jax.lax.scan(
        gradient_step, state, jax.random.split(steps_key, loop.gradient_steps_per_update)
    )
    metrics = summarise_episodes(
        episodes.is_terminal_step,
        episodes.episode_return,
        episodes.episode_length,
        jax.tree.map(jnp.mean, info),
    )
    return state, metrics
