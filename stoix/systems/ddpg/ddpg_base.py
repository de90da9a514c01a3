"""What DDPG (Lillicrap et al., 2016), TD3 and D4PG share on Anakin: all of their machinery.

A deterministic tanh actor explores with Gaussian noise. The shared replay loop
(`stoix.utils.replay`, assembled by `stoix.systems.replay_base`) stores each rollout in an
on-device flashbax buffer, then takes gradient steps on sampled n-step batches. K critics
(stacked parameters, one vmapped apply) regress toward r + γ·min_k Q'_k(s', a'), a' being the
target actor's action, optionally smoothed with clipped noise; the actor ascends the first critic
every `policy_delay` gradient steps, and the target networks follow by Polyak averaging on those
steps. What each member changes:

* DDPG (`ff_ddpg`): K=1, no smoothing, no delay;
* TD3 (`ff_td3`): K=2 with both, all set in its config;
* D4PG (`ff_d4pg`): `distributional=True`, a categorical distribution over fixed atoms replaces
  the scalar critic, with n-step targets.

Read top to bottom: acting, the losses, the gradient step, then `build`.
"""

import functools
from typing import Any, Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import ActFn, NStepBatch, Observation, Params, PRNGKey
from stoix.errors import ConfigError
from stoix.networks.deterministic import make_deterministic_actor, make_state_action_critic
from stoix.parallel import pmean_replicas
from stoix.system_api import AnakinSystem, BuildContext, EvalActFn, SystemParts
from stoix.systems.ddpg.ddpg_losses import (
    categorical_critic_loss,
    categorical_mean,
    smoothed_target_action,
    twin_critic_loss,
)
from stoix.systems.replay_base import ReplayActorCritic, replay_system_parts
from stoix.utils.config import RunPlan, check_range
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.replay import (
    ReplayLearnerState,
    make_trajectory_buffer,
    sample_n_step_batch,
    validate_replay,
)
from stoix.utils.running_statistics import RunningStatistics, observe


class DDPGHyperparameters(NamedTuple):
    gamma: float
    n_step: int
    tau: float  # Polyak rate of the target networks, applied on policy-update steps
    policy_delay: int  # gradient steps per actor (and target) update
    exploration_noise: float  # Gaussian action noise std, as a fraction of the half range
    target_noise: float  # std of the target policy smoothing noise (fraction of half range)
    target_noise_clip: float  # ... clipped to ± this fraction of the half range
    reward_scale: float
    normalise_observations: bool


class DDPGParams(NamedTuple):
    actor: Params
    critic: Params  # K critics stacked on a leading axis
    target_actor: Params
    target_critic: Params


class DDPGOptStates(NamedTuple):
    actor: Any
    critic: Any


class DDPGLossInfo(NamedTuple):
    critic_loss: jax.Array
    actor_loss: jax.Array  # −Q1(s, π(s))
    q_mean: jax.Array  # mean Q1(s_t, a_t)


class Networks(NamedTuple):
    actor_apply: Callable[[Params, Observation], jax.Array]
    critic_apply: Callable[[Params, Observation, jax.Array], jax.Array]  # ONE critic's params
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    buffer: Any
    action_low: jax.Array  # [A]
    action_high: jax.Array  # [A]
    atoms: jax.Array | None  # [Z] support of a categorical critic (D4PG); None: scalar critics


# ACTING


def noisy_action(
    networks: Networks, key: PRNGKey, action: jax.Array, noise_std: float
) -> jax.Array:
    """Adds Gaussian noise scaled to the action range, then clips to the env's bounds."""
    half_range = (networks.action_high - networks.action_low) / 2.0
    noise = noise_std * half_range * jax.random.normal(key, action.shape)
    return jnp.clip(action + noise, networks.action_low, networks.action_high)


def uniform_action(networks: Networks, key: PRNGKey, num_envs: int) -> jax.Array:
    shape = (num_envs,) + networks.action_low.shape
    return jax.random.uniform(key, shape, minval=networks.action_low, maxval=networks.action_high)


# LOSSES


def critic_outputs(
    networks: Networks, critic_params: Params, obs: Observation, action: jax.Array
) -> jax.Array:
    """[K, B] values (or [K, B, Z] logits) of every critic from the stacked parameters."""
    return jax.vmap(networks.critic_apply, in_axes=(0, None, None))(critic_params, obs, action)


def q_value(networks: Networks, output: jax.Array) -> jax.Array:
    return output if networks.atoms is None else categorical_mean(output, networks.atoms)


def critic_loss(
    critic_params: Params, networks: Networks, batch: NStepBatch, next_output: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    output = critic_outputs(networks, critic_params, batch.observation, batch.action)
    if networks.atoms is None:
        loss = twin_critic_loss(output, next_output, batch.reward, batch.discount)
    else:
        loss = categorical_critic_loss(
            output[0], next_output[0], networks.atoms, batch.reward, batch.discount
        )
    return loss, jnp.mean(q_value(networks, output[0]))


def actor_loss(
    actor_params: Params, critic_params: Params, networks: Networks, observation: Observation
) -> jax.Array:
    action = networks.actor_apply(actor_params, observation)
    first_critic = jax.tree.map(lambda x: x[0], critic_params)
    return -jnp.mean(q_value(networks, networks.critic_apply(first_critic, observation, action)))


# THE GRADIENT STEP


def gradient_step(
    networks: Networks, hp: DDPGHyperparameters, state: ReplayLearnerState, key: PRNGKey
) -> Tuple[ReplayLearnerState, DDPGLossInfo]:
    sample_key, smoothing_key = jax.random.split(key)
    batch = sample_n_step_batch(
        networks.buffer, state, sample_key, hp.gamma, hp.normalise_observations, hp.reward_scale
    )
    params, opt_states = state.params, state.opt_states

    # CRITICS toward the (smoothed) target policy's value at s'
    next_action = smoothed_target_action(
        networks.actor_apply(params.target_actor, batch.next_observation),
        smoothing_key,
        hp.target_noise,
        hp.target_noise_clip,
        networks.action_low,
        networks.action_high,
    )
    next_output = critic_outputs(
        networks, params.target_critic, batch.next_observation, next_action
    )
    (c_loss, q_mean), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
        params.critic, networks, batch, next_output
    )
    critic_updates, critic_opt = networks.critic_optimiser.update(
        pmean_replicas(critic_grads), opt_states.critic, params.critic
    )
    critic = optax.apply_updates(params.critic, critic_updates)

    # ACTOR, against the critic just updated, kept only on policy-update steps
    a_loss, actor_grads = jax.value_and_grad(actor_loss)(
        params.actor, critic, networks, batch.observation
    )
    actor_updates, actor_opt = networks.actor_optimiser.update(
        pmean_replicas(actor_grads), opt_states.actor, params.actor
    )
    actor = optax.apply_updates(params.actor, actor_updates)
    gradient_steps = state.gradient_steps + 1
    policy_step = gradient_steps % hp.policy_delay == 0

    def on_policy_step(new: Any, old: Any) -> Any:
        return jax.tree.map(lambda n, o: jnp.where(policy_step, n, o), new, old)

    actor, actor_opt = on_policy_step((actor, actor_opt), (params.actor, opt_states.actor))
    target_actor, target_critic = on_policy_step(
        (
            optax.incremental_update(actor, params.target_actor, hp.tau),
            optax.incremental_update(critic, params.target_critic, hp.tau),
        ),
        (params.target_actor, params.target_critic),
    )
    state = state._replace(
        params=DDPGParams(actor, critic, target_actor, target_critic),
        opt_states=DDPGOptStates(actor_opt, critic_opt),
        gradient_steps=gradient_steps,
    )
    return state, DDPGLossInfo(c_loss, a_loss, q_mean)


# SET-UP


def build(ctx: BuildContext, distributional: bool = False) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    sys_cfg = cfg.system
    hp = DDPGHyperparameters(
        gamma=float(sys_cfg.gamma),
        n_step=int(sys_cfg.n_step),
        tau=float(sys_cfg.tau),
        policy_delay=int(sys_cfg.policy_delay),
        exploration_noise=float(sys_cfg.exploration_noise),
        target_noise=float(sys_cfg.target_noise),
        target_noise_clip=float(sys_cfg.target_noise_clip),
        reward_scale=float(sys_cfg.reward_scale),
        normalise_observations=bool(sys_cfg.normalise_observations),
    )
    actor = make_deterministic_actor(cfg.network, env.spec)
    head = {"num_atoms": int(sys_cfg.num_atoms)} if distributional else {}
    critic = make_state_action_critic(cfg.network, **head)
    clip = float(sys_cfg.max_grad_norm)
    atoms = None
    if distributional:
        atoms = jnp.linspace(float(sys_cfg.v_min), float(sys_cfg.v_max), int(sys_cfg.num_atoms))
    networks = Networks(
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        actor_optimiser=clipped_optimiser(float(sys_cfg.actor_lr), clip),
        critic_optimiser=clipped_optimiser(float(sys_cfg.critic_lr), clip),
        buffer=make_trajectory_buffer(
            plan,
            int(sys_cfg.buffer_size),
            int(sys_cfg.batch_size) // plan.num_replicas,
            hp.n_step,
        ),
        action_low=jnp.asarray(env.spec.action_minimum, jnp.float32),
        action_high=jnp.asarray(env.spec.action_maximum, jnp.float32),
        atoms=atoms,
    )
    num_critics = int(sys_cfg.num_critics)

    def init_shared(params_key: PRNGKey, tuned: Any) -> Tuple[DDPGParams, DDPGOptStates]:
        del tuned  # nothing is sweepable (AnakinSystem.sweepable is empty)
        actor_key, critic_key, example_key = jax.random.split(params_key, 3)
        _, example = env.reset(example_key)
        actor_params = actor.init(actor_key, example.observation)
        example_action = actor.apply(actor_params, example.observation)
        critic_params = jax.vmap(critic.init, in_axes=(0, None, None))(
            jax.random.split(critic_key, num_critics), example.observation, example_action
        )
        params = DDPGParams(actor_params, critic_params, actor_params, critic_params)
        opt_states = DDPGOptStates(
            networks.actor_optimiser.init(actor_params),
            networks.critic_optimiser.init(critic_params),
        )
        return params, opt_states

    def policy(greedy: bool) -> ActFn:
        noise_std = 0.0 if greedy else hp.exploration_noise

        def act(actor_params: Params, observation: Observation, key: PRNGKey) -> jax.Array:
            action = actor.apply(actor_params, observation)
            return noisy_action(networks, key, action, noise_std)

        return act

    def eval_act(greedy: bool) -> EvalActFn:
        act = policy(greedy)

        def act_in_eval(
            actor_and_stats: Tuple[Params, RunningStatistics],
            observation: Observation,
            key: PRNGKey,
        ) -> jax.Array:
            params, stats = actor_and_stats
            return act(params, observe(stats, observation, hp.normalise_observations), key)

        return act_in_eval

    return replay_system_parts(
        ctx,
        ReplayActorCritic(
            buffer=networks.buffer,
            init_shared=init_shared,
            acting_params=lambda params: params.actor,
            act=policy(False),
            eval_act=eval_act,
            gradient_step=functools.partial(gradient_step, networks, hp),
            random_action=functools.partial(uniform_action, networks),
        ),
    )


def validate(cfg: DictConfig, plan: RunPlan, distributional: bool = False) -> None:
    validate_replay(cfg, plan)
    sys_cfg = cfg.system
    for key in ("gamma", "tau"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("exploration_noise", "target_noise", "target_noise_clip", "actor_lr"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    for key in ("critic_lr", "max_grad_norm", "reward_scale"):
        if check_range(cfg, f"system.{key}", 0.0, float("inf")) == 0.0:
            raise ConfigError(f"system.{key}=0 must be positive")
    check_range(cfg, "system.policy_delay", 1, float("inf"))
    check_range(cfg, "system.num_critics", 1, float("inf"))
    if distributional:
        check_range(cfg, "system.num_atoms", 2, float("inf"))
        if int(sys_cfg.num_critics) != 1:
            raise ConfigError(
                f"system.num_critics={sys_cfg.num_critics}: the categorical critic supports one"
            )
        if float(sys_cfg.v_min) >= float(sys_cfg.v_max):
            raise ConfigError(
                f"system.v_min={sys_cfg.v_min} must be below system.v_max={sys_cfg.v_max}"
            )


def make_ddpg_system(name: str, distributional: bool = False) -> AnakinSystem:
    return AnakinSystem(
        name=name,
        action_kinds=("continuous",),
        build=functools.partial(build, distributional=distributional),
        validate=functools.partial(validate, distributional=distributional),
    )
