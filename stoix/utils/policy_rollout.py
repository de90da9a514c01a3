"""A stochastic policy acting into replay: what MPO and AWR (and any replay system whose actor
is a distrax distribution) share.

The rollout samples from the policy, clips continuous actions to the env's bounds (the buffer
stores the action the env received), and records `Transition`s with RAW observations: replay
systems normalise when they sample, with the running statistics of the learner state, so a
stored observation never goes stale when the statistics move.
"""

from typing import Any, Callable, NamedTuple, Tuple

import distrax
import jax
import jax.numpy as jnp

from stoix.base_types import NStepBatch, Observation, Params, PRNGKey, Transition
from stoix.evaluator.anakin import EvalActFn
from stoix.networks.distributions import greedy_action
from stoix.utils import replay
from stoix.utils.running_statistics import RunningStatistics, init_statistics


class PolicyActor(NamedTuple):
    """How a replica acts: the policy network and what happens around it."""

    apply: Callable[[Params, Observation], distrax.Distribution]
    normalise_observations: bool  # feed the networks running-statistics-normalised views
    action_low: jax.Array | None  # [A] continuous actions are clipped to these bounds; None
    action_high: jax.Array | None  # for discrete actions


def observe(actor: PolicyActor, stats: RunningStatistics, obs: Observation) -> Observation:
    """What the networks see: the observation, normalised when that is switched on."""
    return replay.observe(stats, obs, actor.normalise_observations)


def observe_batch(actor: PolicyActor, stats: RunningStatistics, batch: NStepBatch) -> NStepBatch:
    """Both observations of a sampled batch as the networks see them."""
    return replay.observe_batch(stats, batch, actor.normalise_observations, reward_scale=1.0)


def to_env_action(actor: PolicyActor, action: jax.Array) -> jax.Array:
    """Continuous actions clipped to the env's bounds; discrete ones unchanged."""
    if actor.action_low is None:
        return action
    return jnp.clip(action, actor.action_low, actor.action_high)


def policy_act(actor: PolicyActor) -> replay.ActFn:
    """act(params, observation as the networks see it, key): a sample from the policy, clipped
    to the env's bounds (`replay.replay_update` acts with it)."""

    def act(params: Params, observation: Observation, key: PRNGKey) -> jax.Array:
        return to_env_action(actor, actor.apply(params, observation).sample(seed=key))

    return act


def warm_start(
    actor: PolicyActor,
    env: Any,
    buffer: Any,
    loop: replay.ReplayLoop,
    num_envs: int,
    params: Any,
    opt_states: Any,
    actor_params: Params,
    replica_key: PRNGKey,
) -> replay.ReplayLearnerState:
    """A replica's first state: its envs reset and its buffer filled with `loop.warmup_steps`
    steps of the initial policy (`actor_params`).

    The statistics stay fresh: the replicas of a seed cannot average them here (no collective
    runs at initialisation), and the first update's rollout brings them in line.
    """
    key, state_key = jax.random.split(replica_key)
    reset_key, warmup_key = jax.random.split(key)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
    spec = env.spec
    discrete = spec.action_kind == "discrete"
    example = Transition(
        observation=jax.tree.map(lambda x: x[0], timestep.observation),
        action=jnp.zeros(
            () if discrete else (spec.num_actions,), jnp.int32 if discrete else jnp.float32
        ),
        reward=timestep.reward[0],
        terminated=timestep.terminated()[0],
        episode_end=timestep.last()[0],
        next_observation=jax.tree.map(lambda x: x[0], timestep.next_observation),
    )
    obs_stats = init_statistics(spec.observation_shape)
    act = policy_act(actor)
    _, env_state, observation, traj, _ = replay.collect(
        env,
        lambda obs, key: act(actor_params, observe(actor, obs_stats, obs), key),
        warmup_key,
        env_state,
        timestep.observation,
        loop.warmup_steps,
    )
    return replay.ReplayLearnerState(
        params=params,
        opt_states=opt_states,
        buffer_state=replay.add_rollout(buffer, buffer.init(example), traj),
        key=state_key,
        env_state=env_state,
        observation=observation,
        obs_stats=obs_stats,
        env_steps=jnp.zeros((), jnp.int32),
        gradient_steps=jnp.zeros((), jnp.int32),
    )


def make_eval_act(actor: PolicyActor) -> Callable[[bool], EvalActFn]:
    """The evaluator's act: the policy's mode (greedy) or a sample, on normalised views."""

    def eval_act(greedy: bool) -> EvalActFn:
        def act(
            policy: Tuple[Params, RunningStatistics], observation: Observation, key: PRNGKey
        ) -> jax.Array:
            params, stats = policy
            dist = actor.apply(params, observe(actor, stats, observation))
            action = greedy_action(dist) if greedy else dist.sample(seed=key)
            return to_env_action(actor, action)

        return act

    return eval_act
