"""On-device replay shared by every replay-based system: sizing, adding, n-step folding, checks.

Each replica keeps its own flashbax trajectory buffer over its own envs; a buffer of
`system.buffer_size` transitions per seed is split evenly over the replicas and their envs.
Sampling draws sequences of n consecutive steps, which `n_step_batch` folds into one n-step
transition each, so n-step returns never cross an episode end.
"""

import functools
from typing import Any, Callable, NamedTuple, Tuple

import flashbax as fbx
import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    Action,
    EpisodeMetrics,
    NStepBatch,
    Observation,
    PRNGKey,
    TrainMetrics,
    Transition,
    summarise_episodes,
)
from stoix.utils.config import ConfigError, RunPlan, check_range
from stoix.utils.multistep import n_step_target
from stoix.utils.runner import SystemParts, pmean_replicas
from stoix.utils.running_statistics import (
    RunningStatistics,
    init_statistics,
    normalise,
    update_statistics,
)


def clipped_adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
    """The replay actor-critics' optimiser: global-norm clipping, then Adam."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


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


def validate_replay(cfg: DictConfig, plan: RunPlan) -> None:
    """The checks every replay system needs on `system.batch_size`, `buffer_size`, `n_step`,
    `warmup_steps` and `gradient_steps_per_update`, each failing with one line."""
    sys_cfg = cfg.system
    for key in ("batch_size", "buffer_size", "n_step", "gradient_steps_per_update"):
        check_range(cfg, f"system.{key}", 1, float("inf"))
    check_range(cfg, "system.warmup_steps", 0, float("inf"))
    replicas = plan.num_replicas
    batch_size = int(sys_cfg.batch_size)
    if batch_size % replicas:
        raise ConfigError(
            f"system.batch_size={batch_size} is not divisible by {plan.num_devices} device(s) × "
            f"arch.update_batch_size={plan.update_batch_size}"
        )
    time_axis = int(sys_cfg.buffer_size) // replicas // plan.envs_per_replica
    needed = max(int(sys_cfg.n_step), int(sys_cfg.warmup_steps), plan.rollout_length)
    if time_axis < needed:
        raise ConfigError(
            f"system.buffer_size={int(sys_cfg.buffer_size):,} holds only {time_axis} steps per "
            f"env ({plan.total_num_envs} envs); it needs at least {needed} (the largest of "
            "system.n_step, system.warmup_steps and system.rollout_length)"
        )
    if int(sys_cfg.warmup_steps) < int(sys_cfg.n_step):
        raise ConfigError(
            f"system.warmup_steps={sys_cfg.warmup_steps} must be at least "
            f"system.n_step={sys_cfg.n_step}, so the first batch can be sampled"
        )


# THE REPLAY LOOP OF THE ACTOR-CRITIC SYSTEMS (DDPG, TD3, D4PG, SAC): act, store, replay.


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
    warmup_steps: int  # uniformly random steps per env before learning
    normalise_observations: bool


# (params, observation as the networks see it [N], key) -> actions [N]
ActFn = Callable[[Any, Observation, PRNGKey], Action]
# (state, key) -> (state, loss info): one optimiser step on one replayed batch
GradientStep = Callable[[ReplayLearnerState, PRNGKey], Tuple[ReplayLearnerState, Any]]


def observe(stats: RunningStatistics, observation: Observation, enabled: bool) -> Observation:
    """What the networks see: the observation, normalised when that is switched on."""
    if not enabled:
        return observation
    return observation._replace(agent_view=normalise(stats, observation.agent_view))


def observe_batch(
    stats: RunningStatistics, batch: NStepBatch, enabled: bool, reward_scale: float
) -> NStepBatch:
    """A sampled batch as the learner sees it: normalised observations, scaled rewards."""
    return batch._replace(
        observation=observe(stats, batch.observation, enabled),
        next_observation=observe(stats, batch.next_observation, enabled),
        reward=reward_scale * batch.reward,
    )


def collect(
    env: Any,
    act: Callable[[Observation, PRNGKey], Action],
    key: PRNGKey,
    env_state: Any,
    observation: Observation,
    length: int,
) -> Tuple[PRNGKey, Any, Observation, Transition, EpisodeMetrics]:
    """Steps all envs `length` times with `act`; returns time-major [T, N] transitions."""

    def step(carry: Tuple[PRNGKey, Any, Observation], _: None):
        key, env_state, observation = carry
        key, act_key = jax.random.split(key)
        action = act(observation, act_key)
        env_state, timestep = jax.vmap(env.step)(env_state, action)
        transition = Transition(
            observation=observation,
            action=action,
            reward=timestep.reward,
            terminated=timestep.terminated(),
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
        )
        return (key, env_state, timestep.observation), (transition, timestep.metrics)

    (key, env_state, observation), (traj, metrics) = jax.lax.scan(
        step, (key, env_state, observation), None, length=length
    )
    return key, env_state, observation, traj, metrics


def init_replay_state(
    env: Any,
    buffer: Any,
    loop: ReplayLoop,
    num_envs: int,
    params: Any,
    opt_states: Any,
    random_action: Callable[[PRNGKey, int], Action],
    replica_key: PRNGKey,
) -> ReplayLearnerState:
    """Resets the replica's envs and fills its buffer with `loop.warmup_steps` random steps per
    env. The observation statistics start empty: they are shared by the replicas of a seed,
    and the runner initialises each replica on its own, so the first update fills them."""
    env_key, warmup_key, state_key = jax.random.split(replica_key, 3)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
    example = Transition(
        timestep.observation,
        random_action(warmup_key, num_envs),
        timestep.reward,
        timestep.terminated(),
        timestep.last(),
        timestep.next_observation,
    )
    buffer_state = buffer.init(jax.tree.map(lambda x: x[0], example))
    stats = init_statistics(env.spec.observation_shape)
    observation = timestep.observation
    if loop.warmup_steps > 0:
        _, env_state, observation, traj, _ = collect(
            env,
            lambda obs, key: random_action(key, num_envs),
            warmup_key,
            env_state,
            observation,
            loop.warmup_steps,
        )
        buffer_state = add_rollout(buffer, buffer_state, traj)
    return ReplayLearnerState(
        params=params,
        opt_states=opt_states,
        buffer_state=buffer_state,
        key=state_key,
        env_state=env_state,
        observation=observation,
        obs_stats=stats,
        env_steps=jnp.zeros((), jnp.int32),
        gradient_steps=jnp.zeros((), jnp.int32),
    )


def replay_update(
    env: Any,
    buffer: Any,
    loop: ReplayLoop,
    act: ActFn,
    acting_params: Callable[[Any], Any],
    gradient_step: GradientStep,
    state: ReplayLearnerState,
) -> Tuple[ReplayLearnerState, TrainMetrics]:
    """One update: a rollout with the current policy into the buffer, then gradient steps.

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


def replay_system_parts(
    env: Any,
    buffer: Any,
    loop: ReplayLoop,
    num_envs: int,
    init_shared: Callable[[PRNGKey, Any], Tuple[Any, Any]],
    random_action: Callable[[PRNGKey, int], Action],
    policy: Callable[[bool], ActFn],
    gradient_step: GradientStep,
) -> SystemParts:
    """The runner's parts of a replay actor-critic whose parameters have an `actor` field.

    Args:
        policy: greedy flag -> act(actor params, observation as the networks see it, key).
            Training acts with `policy(False)`, the exploring policy; evaluation with either.
    """

    def init_state(shared: Tuple[Any, Any], replica_key: PRNGKey) -> ReplayLearnerState:
        return init_replay_state(env, buffer, loop, num_envs, *shared, random_action, replica_key)

    def eval_act(greedy: bool) -> Callable[..., Action]:
        act = policy(greedy)

        def act_in_eval(
            actor_and_stats: Tuple[Any, RunningStatistics], observation: Observation, key: PRNGKey
        ) -> Action:
            params, stats = actor_and_stats
            return act(params, observe(stats, observation, loop.normalise_observations), key)

        return act_in_eval

    return SystemParts(
        init_shared=init_shared,
        init_state=init_state,
        update_step=functools.partial(
            replay_update,
            env,
            buffer,
            loop,
            policy(False),
            lambda params: params.actor,
            gradient_step,
        ),
        # The evaluator gets the statistics too, so it normalises exactly as training does.
        actor_params=lambda state: (state.params.actor, state.obs_stats),
        eval_act=eval_act,
    )
