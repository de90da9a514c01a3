"""The on-policy actor-critic base: an actor and a critic, each with its own optimiser, learning
from the rollouts of the current policy.

This module assembles the members: networks and optimisers, parameter and replica init, the
evaluator's act, the Anakin and Sebulba parts, and the checks every member needs. What one update
computes (rollout, collect = rollout → statistics → GAE, losses, minibatch step, update skeleton)
is in `stoix.systems.on_policy_learning`. The members and what each changes:

* PPO (`ppo/anakin/ff_ppo*.py`): nothing but its clipped surrogate (`ppo/ppo_base.py`).
* DPO (`ppo/anakin/ff_dpo*.py`): the policy loss, Lu et al.'s drift in place of PPO's clip.
* REINFORCE (`policy_gradient/anakin/ff_reinforce*.py`): the policy loss, the plain gradient
  (`policy_gradient/pg_base.py`).
* V-MPO (`vmpo/anakin/ff_vmpo*.py`, `vmpo/vmpo_base.py`): its own minibatch step (E-step,
  M-step, Lagrange duals with a third optimiser) and hyperparameters over this base's collect.
* Sebulba PPO (`ppo/sebulba/ff_ppo.py`): GAE over host-env rollouts with the reset steps
  masked out, then PPO's minibatch step; acting and set-up from `sebulba_parts`.
* IMPALA (`impala/sebulba/ff_impala.py`): a V-trace loss over whole env sequences; acting and
  set-up from `sebulba_parts`.
* A recurrent PPO is to build on the same networks, losses and set-up.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import (
    ActorCriticOptStates,
    ActorCriticParams,
    Environment,
    EnvSpec,
    Observation,
    PRNGKey,
)
from stoix.evaluator.acting import policy_eval_act
from stoix.networks.base import make_actor, make_critic
from stoix.system_api import (
    BuildContext,
    EvalActFn,
    Rollout,
    SebulbaBuildContext,
    SebulbaParts,
    SystemParts,
)
from stoix.systems.on_policy_learning import (
    ActorExtras,
    Networks,
    OnPolicySettings,
    PolicyLoss,
    PPOHyperparameters,
    sample_action,
    to_env_action,
    update_step,
)
from stoix.systems.ppo.ppo_types import PPOLearnerState
from stoix.utils.config import RunPlan, check_divides, check_range
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.running_statistics import init_statistics

# SET-UP


def make_networks(cfg: DictConfig, spec: EnvSpec, grad_steps: int) -> Tuple[Any, Any, Networks]:
    """The actor and critic modules from `network`, and their optimisers from `system`.

    Args:
        grad_steps: gradient steps over the whole run, the length of the learning-rate decay.
    """
    sys_cfg = cfg.system
    actor, critic = make_actor(cfg.network, spec), make_critic(cfg.network)
    decay_steps = grad_steps if bool(sys_cfg.decay_learning_rates) else None
    max_grad_norm = float(sys_cfg.max_grad_norm)
    continuous = spec.action_kind == "continuous"
    networks = Networks(
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        actor_optimiser=clipped_optimiser(
            float(sys_cfg.actor_lr), max_grad_norm, eps=1e-5, decay_steps=decay_steps
        ),
        critic_optimiser=clipped_optimiser(
            float(sys_cfg.critic_lr), max_grad_norm, eps=1e-5, decay_steps=decay_steps
        ),
        action_low=jnp.asarray(spec.action_minimum) if continuous else None,
        action_high=jnp.asarray(spec.action_maximum) if continuous else None,
    )
    return actor, critic, networks


def read_hyperparameters(sys_cfg: DictConfig, plan: RunPlan) -> PPOHyperparameters:
    value_clip = sys_cfg.value_clip_epsilon
    return PPOHyperparameters(
        gamma=float(sys_cfg.gamma),
        gae_lambda=float(sys_cfg.gae_lambda),
        value_clip_epsilon=None if value_clip is None else float(value_clip),
        entropy_coefficient=float(sys_cfg.entropy_coefficient),
        value_coefficient=float(sys_cfg.value_coefficient),
        standardise_advantages=bool(sys_cfg.standardise_advantages),
        epochs=int(sys_cfg.epochs),
        num_minibatches=int(sys_cfg.num_minibatches),
        rollout_length=plan.rollout_length,
        normalise_observations=bool(sys_cfg.normalise_observations),
    )


def init_actor_critic(
    env: Environment, actor: Any, critic: Any, networks: Networks, params_key: PRNGKey
) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
    actor_key, critic_key, example_key = jax.random.split(params_key, 3)
    _, example = env.reset(example_key)
    return init_from_observation(
        example.observation, actor, critic, networks, actor_key, critic_key
    )


def init_from_observation(
    observation: Observation,
    actor: Any,
    critic: Any,
    networks: Networks,
    actor_key: PRNGKey,
    critic_key: PRNGKey,
) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
    """Parameters and optimiser states, shaped by one example observation."""
    params = ActorCriticParams(
        actor.init(actor_key, observation), critic.init(critic_key, observation)
    )
    opt_states = ActorCriticOptStates(
        networks.actor_optimiser.init(params.actor_params),
        networks.critic_optimiser.init(params.critic_params),
    )
    return params, opt_states


def init_replica(
    env: Environment, num_envs: int, params: Any, opt_states: Any, replica_key: PRNGKey
) -> PPOLearnerState:
    """One replica's state: its own envs and key around the seed's shared params."""
    env_key, state_key = jax.random.split(replica_key)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
    obs_stats = init_statistics(env.spec.observation_shape)
    return PPOLearnerState(
        params, opt_states, state_key, env_state, timestep.observation, obs_stats
    )


def make_eval_act(
    actor_apply: Callable[..., Any], networks: Networks, normalise_observations: bool
) -> Callable[[bool], EvalActFn]:
    """The evaluator's act: (actor params, observation statistics) -> the policy's action."""
    return policy_eval_act(
        actor_apply, normalise_observations, functools.partial(to_env_action, networks)
    )


# ANAKIN


def anakin_parts(
    ctx: BuildContext,
    hp: OnPolicySettings,
    actor: Any,
    networks: Networks,
    init_shared: Callable[[PRNGKey, Mapping[str, jax.Array]], Tuple[Any, Any]],
    update: Callable[[PPOLearnerState], Any],
) -> SystemParts:
    """What every Anakin member hands the runner, around its own shared init and update.

    Args:
        init_shared: (params key, swept values) -> (params, optimiser states) of a seed.
    """
    env, num_envs = ctx.env, ctx.plan.envs_per_replica

    def init_state(shared: Tuple[Any, Any], replica_key: PRNGKey) -> PPOLearnerState:
        return init_replica(env, num_envs, *shared, replica_key)

    return SystemParts(
        init_shared=init_shared,
        init_state=init_state,
        update_step=update,
        actor_params=lambda state: (state.params.actor_params, state.obs_stats),
        eval_act=make_eval_act(actor.apply, networks, hp.normalise_observations),
    )


def make_build(
    make_policy_loss: Callable[[DictConfig], PolicyLoss],
) -> Callable[[BuildContext], SystemParts]:
    """`build` for a member that differs from PPO only in its policy loss.

    Args:
        make_policy_loss: system config -> the policy loss (e.g. `ppo_base.ppo_policy_loss`).
    """

    def build(ctx: BuildContext) -> SystemParts:
        env, plan = ctx.env, ctx.plan
        hp = read_hyperparameters(ctx.config.system, plan)
        grad_steps = plan.num_updates * hp.epochs * hp.num_minibatches
        actor, critic, networks = make_networks(ctx.config, env.spec, grad_steps)
        policy_loss = make_policy_loss(ctx.config.system)

        def init_shared(
            params_key: PRNGKey, tuned: Mapping[str, jax.Array]
        ) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
            del tuned  # the family sweeps nothing (AnakinSystem.sweepable is empty)
            return init_actor_critic(env, actor, critic, networks, params_key)

        update = functools.partial(update_step, networks, env, hp, policy_loss)
        return anakin_parts(ctx, hp, actor, networks, init_shared, update)

    return build


# SEBULBA


class SebulbaLearnerState(NamedTuple):
    """The learner's state; the envs and their observations live with the actor threads."""

    params: ActorCriticParams
    opt_states: ActorCriticOptStates
    key: PRNGKey


def sebulba_act(
    networks: Networks, actor_params: Any, observation: Observation, key: PRNGKey
) -> Tuple[jax.Array, ActorExtras, PRNGKey]:
    """On an actor device, once per env step: the action and what the learner needs of it."""
    key, sample_key = jax.random.split(key)
    env_action, extras = sample_action(networks, actor_params, observation, sample_key)
    return env_action, extras, key


def sebulba_parts(
    ctx: SebulbaBuildContext,
    make_learn: Callable[[Networks], Callable[[SebulbaLearnerState, Rollout], Tuple[Any, Any]]],
) -> SebulbaParts:
    """What a Sebulba member hands the runner: the base's networks, acting and evaluation around
    the member's learning step.

    Args:
        make_learn: the networks -> (learner state, rollout) -> (learner state, loss info).
    """
    sys_cfg, plan = ctx.config.system, ctx.plan
    grad_steps = plan.num_updates * int(sys_cfg.epochs) * int(sys_cfg.num_minibatches)
    actor, critic, networks = make_networks(ctx.config, ctx.spec, grad_steps)
    identity_stats = init_statistics(ctx.spec.observation_shape)
    example = jax.tree.map(lambda x: x[0], ctx.example_observation)

    def init_learner(params_key: PRNGKey) -> SebulbaLearnerState:
        actor_key, critic_key, state_key = jax.random.split(params_key, 3)
        params, opt_states = init_from_observation(
            example, actor, critic, networks, actor_key, critic_key
        )
        return SebulbaLearnerState(params, opt_states, state_key)

    policy_act = make_eval_act(actor.apply, networks, bool(sys_cfg.normalise_observations))
    return SebulbaParts(
        init_learner=init_learner,
        actor_params=lambda state: state.params.actor_params,
        act=functools.partial(sebulba_act, networks),
        learn=make_learn(networks),
        # The evaluator gets the same (params, statistics) pair as Anakin's; Sebulba does not
        # normalise observations, so the statistics stay at identity.
        eval_act=lambda greedy: (
            lambda params, obs, key: policy_act(greedy)((params, identity_stats), obs, key)
        ),
    )


# CHECKS


def validate_on_policy(
    cfg: DictConfig,
    plan: RunPlan,
    batch_label: str = "arch.total_num_envs / (devices × arch.update_batch_size)",
    envs_per_learner: int | None = None,
) -> None:
    """The checks every GAE member needs (minibatch split, γ, λ, rates, epochs); IMPALA, which
    splits whole env sequences and has no λ of GAE, has its own.

    Args:
        batch_label, envs_per_learner: how many envs one learner replica learns from, and how
            the config makes that number (Anakin's default: envs per replica).
    """
    envs = plan.envs_per_replica if envs_per_learner is None else envs_per_learner
    check_divides(
        f"{batch_label} × system.rollout_length",
        envs * plan.rollout_length,
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )
    for key in ("gamma", "gae_lambda"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("actor_lr", "critic_lr", "max_grad_norm"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    check_range(cfg, "system.epochs", 1, float("inf"))
