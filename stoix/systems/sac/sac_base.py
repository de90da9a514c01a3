"""What SAC (Haarnoja et al., 2018) and discrete SAC (Christodoulou, 2019) share on Anakin: all
of their machinery; the action kind of the env picks the member.

A stochastic actor (tanh-Gaussian or categorical) acts; the shared replay loop
(`stoix.utils.replay`, assembled by `stoix.systems.replay_base`) stores each rollout in an
on-device flashbax buffer and takes gradient steps on sampled n-step batches. Twin critics
regress toward the soft value of s' under the current policy, read from Polyak-averaged target
critics; the actor maximises the soft value under the critics just updated; the temperature α is
tuned toward a target entropy. What each member changes:

* SAC (`ff_sac`): Q(s, a) critics; expectations over the policy by one reparameterised sample;
* discrete SAC (`ff_sac_discrete`): critics giving Q(s, ·) and a categorical actor, so every
  expectation over the policy is an exact sum over actions.

Read top to bottom: acting, the policy expectations, the gradient step, then `build`.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Tuple

import distrax
import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import Observation, Params, PRNGKey
from stoix.errors import ConfigError
from stoix.networks.base import make_actor, make_critic
from stoix.networks.deterministic import make_state_action_critic
from stoix.parallel import pmean_replicas
from stoix.system_api import BuildContext, SystemParts
from stoix.systems.ddpg.ddpg_losses import td_regression_loss
from stoix.systems.replay_base import (
    PolicyActor,
    ReplayActorCritic,
    policy_act,
    policy_eval,
    replay_system_parts,
)
from stoix.systems.sac.sac_losses import (
    PolicyExpectation,
    categorical_expectation,
    policy_loss,
    soft_value,
    temperature_loss,
)
from stoix.utils.config import RunPlan, check_range
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.replay import (
    ReplayLearnerState,
    make_trajectory_buffer,
    sample_n_step_batch,
    validate_replay,
)


class SACHyperparameters(NamedTuple):
    gamma: float
    n_step: int
    tau: float  # Polyak rate of the target critics per gradient step
    target_entropy: float
    autotune_alpha: bool
    reward_scale: float
    normalise_observations: bool


class SACParams(NamedTuple):
    actor: Params
    critic: Params  # twin critics stacked on a leading axis of 2
    target_critic: Params
    log_alpha: jax.Array  # () log of the temperature


class SACOptStates(NamedTuple):
    actor: Any
    critic: Any
    alpha: Any


class SACLossInfo(NamedTuple):
    critic_loss: jax.Array
    actor_loss: jax.Array
    alpha: jax.Array
    entropy: jax.Array  # −E[log π(a|s)] on the batch
    q_mean: jax.Array  # mean Q1(s_t, a_t)


class Networks(NamedTuple):
    actor_apply: Callable[[Params, Observation], distrax.Distribution]
    # continuous: (params, obs, action) -> Q [B]; discrete: (params, obs) -> Q(s, ·) [B, A]
    critic_apply: Callable[..., jax.Array]
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    alpha_optimiser: optax.GradientTransformation
    buffer: Any
    discrete: bool
    action_low: jax.Array | None  # [A] continuous bounds, for the warm-up's uniform actions
    action_high: jax.Array | None


# ACTING


def uniform_action(networks: Networks, num_actions: int, key: PRNGKey, num_envs: int):
    if networks.discrete:
        return jax.random.randint(key, (num_envs,), 0, num_actions)
    shape = (num_envs,) + networks.action_low.shape
    return jax.random.uniform(key, shape, minval=networks.action_low, maxval=networks.action_high)


# POLICY EXPECTATIONS AND CRITIC VALUES


def twin_q(networks: Networks, critic_params: Params, obs: Observation, action=None) -> jax.Array:
    """[2, B] (continuous, at `action`) or [2, B, A] (discrete) values of both critics."""
    if networks.discrete:
        return jax.vmap(networks.critic_apply, in_axes=(0, None))(critic_params, obs)
    return jax.vmap(networks.critic_apply, in_axes=(0, None, None))(critic_params, obs, action)


def q_of_taken_actions(
    networks: Networks, critic_params: Params, obs: Observation, action: jax.Array
) -> jax.Array:
    """[2, B] both critics' values of the stored actions."""
    if networks.discrete:
        all_q = twin_q(networks, critic_params, obs)
        return jnp.take_along_axis(all_q, action[None, :, None], axis=-1)[..., 0]
    return twin_q(networks, critic_params, obs, action)


def policy_expectation(
    networks: Networks,
    dist: distrax.Distribution,
    critic_params: Params,
    obs: Observation,
    key: PRNGKey,
) -> PolicyExpectation:
    """E_π[min(Q1, Q2)] and E_π[log π]: exact for a categorical policy, by one reparameterised
    sample for a continuous one."""
    if networks.discrete:
        return categorical_expectation(dist, jnp.min(twin_q(networks, critic_params, obs), 0))
    action, log_prob = dist.sample_and_log_prob(seed=key)
    return PolicyExpectation(
        q=jnp.min(twin_q(networks, critic_params, obs, action), axis=0), log_prob=log_prob
    )


# THE GRADIENT STEP


def critic_loss(
    critic_params: Params, networks: Networks, batch: Any, next_value: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    q = q_of_taken_actions(networks, critic_params, batch.observation, batch.action)
    return td_regression_loss(q, next_value, batch.reward, batch.discount), jnp.mean(q[0])


def actor_loss(
    actor_params: Params,
    critic_params: Params,
    alpha: jax.Array,
    networks: Networks,
    obs: Observation,
    key: PRNGKey,
) -> Tuple[jax.Array, jax.Array]:
    dist = networks.actor_apply(actor_params, obs)
    expectation = policy_expectation(networks, dist, critic_params, obs, key)
    return policy_loss(expectation, alpha), jnp.mean(expectation.log_prob)


def gradient_step(
    networks: Networks, hp: SACHyperparameters, state: ReplayLearnerState, key: PRNGKey
) -> Tuple[ReplayLearnerState, SACLossInfo]:
    sample_key, next_key, actor_key = jax.random.split(key, 3)
    batch = sample_n_step_batch(
        networks.buffer, state, sample_key, hp.gamma, hp.normalise_observations, hp.reward_scale
    )
    params, opt_states = state.params, state.opt_states
    alpha = jnp.exp(params.log_alpha)

    # CRITICS toward the soft value of s' under the current policy and the target critics
    next_dist = networks.actor_apply(params.actor, batch.next_observation)
    next_value = soft_value(
        policy_expectation(
            networks, next_dist, params.target_critic, batch.next_observation, next_key
        ),
        alpha,
    )
    (c_loss, q_mean), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
        params.critic, networks, batch, next_value
    )
    critic_updates, critic_opt = networks.critic_optimiser.update(
        pmean_replicas(critic_grads), opt_states.critic, params.critic
    )
    critic = optax.apply_updates(params.critic, critic_updates)

    # ACTOR against the critics just updated
    (a_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        params.actor, critic, alpha, networks, batch.observation, actor_key
    )
    actor_updates, actor_opt = networks.actor_optimiser.update(
        pmean_replicas(actor_grads), opt_states.actor, params.actor
    )
    actor = optax.apply_updates(params.actor, actor_updates)

    # TEMPERATURE toward the target entropy
    log_alpha, alpha_opt = params.log_alpha, opt_states.alpha
    if hp.autotune_alpha:
        alpha_grad = jax.grad(temperature_loss)(log_alpha, log_prob, hp.target_entropy)
        alpha_updates, alpha_opt = networks.alpha_optimiser.update(
            pmean_replicas(alpha_grad), alpha_opt, log_alpha
        )
        log_alpha = optax.apply_updates(log_alpha, alpha_updates)

    target_critic = optax.incremental_update(critic, params.target_critic, hp.tau)
    state = state._replace(
        params=SACParams(actor, critic, target_critic, log_alpha),
        opt_states=SACOptStates(actor_opt, critic_opt, alpha_opt),
        gradient_steps=state.gradient_steps + 1,
    )
    return state, SACLossInfo(c_loss, a_loss, alpha, -log_prob, q_mean)


# SET-UP


def build(ctx: BuildContext) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    sys_cfg, spec = cfg.system, env.spec
    discrete = spec.action_kind == "discrete"
    scale = float(sys_cfg.target_entropy_scale)
    # Continuous: −scale · A (Haarnoja et al.); discrete: a fraction of the uniform policy's
    # entropy log |A|, since the maximum is reachable there and would keep the policy uniform.
    target_entropy = scale * math.log(spec.num_actions) if discrete else -scale * spec.num_actions
    hp = SACHyperparameters(
        gamma=float(sys_cfg.gamma),
        n_step=int(sys_cfg.n_step),
        tau=float(sys_cfg.tau),
        target_entropy=target_entropy,
        autotune_alpha=bool(sys_cfg.autotune_alpha),
        reward_scale=float(sys_cfg.reward_scale),
        normalise_observations=bool(sys_cfg.normalise_observations),
    )
    actor = make_actor(cfg.network, spec)
    if discrete:
        critic = make_critic(cfg.network, action_dim=spec.num_actions)
    else:
        critic = make_state_action_critic(cfg.network)
    clip = float(sys_cfg.max_grad_norm)
    networks = Networks(
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        actor_optimiser=clipped_optimiser(float(sys_cfg.actor_lr), clip),
        critic_optimiser=clipped_optimiser(float(sys_cfg.critic_lr), clip),
        alpha_optimiser=optax.adam(float(sys_cfg.alpha_lr)),
        buffer=make_trajectory_buffer(
            plan,
            int(sys_cfg.buffer_size),
            int(sys_cfg.batch_size) // plan.num_replicas,
            hp.n_step,
        ),
        discrete=discrete,
        action_low=None if discrete else jnp.asarray(spec.action_minimum, jnp.float32),
        action_high=None if discrete else jnp.asarray(spec.action_maximum, jnp.float32),
    )

    def init_shared(params_key: PRNGKey, tuned: Any) -> Tuple[SACParams, SACOptStates]:
        del tuned  # nothing is sweepable (AnakinSystem.sweepable is empty)
        actor_key, critic_key, action_key, example_key = jax.random.split(params_key, 4)
        _, example = env.reset(example_key)
        actor_params = actor.init(actor_key, example.observation)
        critic_keys = jax.random.split(critic_key)
        if discrete:
            critic_params = jax.vmap(critic.init, in_axes=(0, None))(
                critic_keys, example.observation
            )
        else:
            action = actor.apply(actor_params, example.observation).sample(seed=action_key)
            critic_params = jax.vmap(critic.init, in_axes=(0, None, None))(
                critic_keys, example.observation, action
            )
        log_alpha = jnp.log(jnp.asarray(float(sys_cfg.init_alpha), jnp.float32))
        params = SACParams(actor_params, critic_params, critic_params, log_alpha)
        opt_states = SACOptStates(
            networks.actor_optimiser.init(actor_params),
            networks.critic_optimiser.init(critic_params),
            networks.alpha_optimiser.init(log_alpha),
        )
        return params, opt_states

    # Samples are stored as drawn: the tanh head already maps into the env's bounds.
    policy = PolicyActor(actor.apply, hp.normalise_observations, None, None)
    return replay_system_parts(
        ctx,
        ReplayActorCritic(
            buffer=networks.buffer,
            init_shared=init_shared,
            acting_params=lambda params: params.actor,
            act=policy_act(policy),
            eval_act=policy_eval(policy),
            gradient_step=functools.partial(gradient_step, networks, hp),
            random_action=functools.partial(uniform_action, networks, spec.num_actions),
        ),
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_replay(cfg, plan)
    for key in ("gamma", "tau"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    check_range(cfg, "system.actor_lr", 0.0, float("inf"))
    check_range(cfg, "system.alpha_lr", 0.0, float("inf"))
    for key in ("critic_lr", "max_grad_norm", "reward_scale", "init_alpha"):
        if check_range(cfg, f"system.{key}", 0.0, float("inf")) == 0.0:
            raise ConfigError(f"system.{key}=0 must be positive")
