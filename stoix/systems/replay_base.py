"""The assembly of a replay actor-critic: a system's acting, warm-up and gradient step put on
the shared replay loop (`stoix.utils.replay`) and handed to the runner as `SystemParts`.

Every replay actor-critic builds its parts with `replay_system_parts`; what each member changes:

* DDPG, TD3, D4PG (`ddpg/ddpg_base.py`): a deterministic actor exploring with Gaussian noise
  and its own eval act (no noise when greedy); a uniformly random warm-up.
* SAC, discrete SAC (`sac/sac_base.py`): a `PolicyActor` whose samples are stored as drawn (the
  tanh head already maps into the env's bounds); a uniformly random warm-up.
* AWR (`awr/awr_base.py`) and MPO (`mpo/mpo_base.py`): a `PolicyActor` clipped to the env's
  bounds; the initial policy fills the buffer instead of random actions.

Rollouts record `Transition`s with RAW observations: replay systems normalise when they sample,
with the running statistics of the learner state, so a stored observation never goes stale when
the statistics move. The evaluator gets those statistics with the actor's parameters, so it
normalises exactly as training does.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import distrax
import jax
import jax.numpy as jnp

from stoix.base_types import (
    ActFn,
    Action,
    EnvSpec,
    Observation,
    Params,
    PRNGKey,
)
from stoix.evaluator.acting import policy_eval_act
from stoix.system_api import BuildContext, EvalActFn, SystemParts
from stoix.utils.replay import (
    GradientStep,
    ReplayLearnerState,
    ReplayLoop,
    ReplicaKeys,
    init_replay_state,
    replay_loop,
    replay_update,
    start_replica,
)
from stoix.utils.running_statistics import init_statistics, observe

# A STOCHASTIC POLICY ACTING INTO REPLAY


class PolicyActor(NamedTuple):
    """How a replica acts with a distrax policy: the network and what happens around it."""

    apply: Callable[[Params, Observation], distrax.Distribution]
    normalise_observations: bool  # feed the networks running-statistics-normalised views
    # [A] continuous actions are clipped to these bounds; None: actions are stored as sampled
    # (discrete actions, or a head that already maps into the bounds)
    action_low: jax.Array | None
    action_high: jax.Array | None


def clipped_policy_actor(
    apply: Callable[[Params, Observation], distrax.Distribution],
    spec: EnvSpec,
    normalise_observations: bool,
) -> PolicyActor:
    """A policy whose continuous samples are clipped to the env's bounds, so the buffer stores
    the action the env received."""
    if spec.action_kind == "discrete":
        return PolicyActor(apply, normalise_observations, None, None)
    return PolicyActor(
        apply,
        normalise_observations,
        jnp.asarray(spec.action_minimum, jnp.float32),
        jnp.asarray(spec.action_maximum, jnp.float32),
    )


def to_env_action(actor: PolicyActor, action: jax.Array) -> jax.Array:
    """Continuous actions clipped to the env's bounds; others unchanged."""
    if actor.action_low is None:
        return action
    return jnp.clip(action, actor.action_low, actor.action_high)


def policy_act(actor: PolicyActor) -> ActFn:
    """act(params, observation as the networks see it, key): a sample from the policy, as the
    env receives it."""

    def act(params: Params, observation: Observation, key: PRNGKey) -> jax.Array:
        return to_env_action(actor, actor.apply(params, observation).sample(seed=key))

    return act


def policy_eval(actor: PolicyActor) -> Callable[[bool], EvalActFn]:
    """The evaluator's act: the policy's mode (greedy) or a sample, on normalised views."""
    return policy_eval_act(
        actor.apply, actor.normalise_observations, functools.partial(to_env_action, actor)
    )


# THE ASSEMBLY


class ReplayActorCritic(NamedTuple):
    """What a replay actor-critic hands the assembly beside its build context (which gives the
    env, the envs per replica and the loop's `system.*` settings); functions act on ONE
    replica."""

    buffer: Any  # flashbax trajectory buffer
    # (params key, swept values) -> (params, optimiser states), shared by a seed's replicas
    init_shared: Callable[[PRNGKey, Mapping[str, jax.Array]], Tuple[Any, Any]]
    acting_params: Callable[[Any], Params]  # the system's params -> the actor's
    act: ActFn  # how training acts, on observations as the networks see them
    eval_act: Callable[[bool], EvalActFn]  # greedy flag -> act((actor params, stats), obs, key)
    gradient_step: GradientStep
    # (key, num envs) -> uniformly random actions that fill the buffer before learning;
    # None: the initial policy fills it (`warm_start`)
    random_action: Callable[[PRNGKey, int], Action] | None


def warm_start(
    ctx: BuildContext,
    loop: ReplayLoop,
    actor_critic: ReplayActorCritic,
    params: Any,
    opt_states: Any,
    replica_key: PRNGKey,
) -> ReplayLearnerState:
    """A replica's first state: its envs reset and its buffer filled with `loop.warmup_steps`
    steps of the initial policy, acting on observations normalised by empty statistics."""
    key, state_key = jax.random.split(replica_key)
    reset_key, warmup_key = jax.random.split(key)
    spec, num_envs = ctx.env.spec, ctx.plan.envs_per_replica
    if spec.action_kind == "discrete":
        example_action = jnp.zeros((num_envs,), jnp.int32)
    else:
        example_action = jnp.zeros((num_envs, spec.num_actions), jnp.float32)
    actor_params = actor_critic.acting_params(params)
    stats = init_statistics(spec.observation_shape)

    def act(observation: Observation, key: PRNGKey) -> Action:
        observed = observe(stats, observation, loop.normalise_observations)
        return actor_critic.act(actor_params, observed, key)

    keys = ReplicaKeys(reset=reset_key, warmup=warmup_key, state=state_key)
    return start_replica(
        ctx.env, actor_critic.buffer, loop, num_envs, params, opt_states, keys, example_action, act
    )


def replay_system_parts(ctx: BuildContext, actor_critic: ReplayActorCritic) -> SystemParts:
    """The runner's parts of a replay actor-critic: a warm-up, then per update one rollout and
    `system.gradient_steps_per_update` gradient steps."""
    env, plan, loop = ctx.env, ctx.plan, replay_loop(ctx.config, ctx.plan)

    def init_state(shared: Tuple[Any, Any], replica_key: PRNGKey) -> ReplayLearnerState:
        params, opt_states = shared
        if actor_critic.random_action is None:
            return warm_start(ctx, loop, actor_critic, params, opt_states, replica_key)
        return init_replay_state(
            env,
            actor_critic.buffer,
            loop,
            plan.envs_per_replica,
            params,
            opt_states,
            actor_critic.random_action,
            replica_key,
        )

    return SystemParts(
        init_shared=actor_critic.init_shared,
        init_state=init_state,
        update_step=functools.partial(
            replay_update,
            env,
            actor_critic.buffer,
            loop,
            actor_critic.act,
            actor_critic.acting_params,
            actor_critic.gradient_step,
        ),
        actor_params=lambda state: (actor_critic.acting_params(state.params), state.obs_stats),
        eval_act=actor_critic.eval_act,
    )
