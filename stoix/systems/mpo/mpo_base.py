"""What MPO (Abdolmaleki et al., 2018) for discrete and for continuous actions share on Anakin:
all of its machinery; the env's action kind picks the critic and the E-step.

Replay-based: a stochastic policy acts into an on-device flashbax buffer (the replay loop of
`stoix.utils.replay`, assembled by `stoix.systems.replay_base`; the initial policy fills it
first); each gradient step trains a Q critic on n-step TD targets bootstrapped from the target
policy's expected value under the target critic, then improves the policy by MPO's E-step
(weights over actions under a KL bound on the temperature η) and M-step (weighted likelihood
under KL trust regions), with the multipliers learnt as dual log-parameters by their own
optimiser. Target actor and critic follow by Polyak averaging. What each member changes:

* `ff_mpo`: discrete actions enumerate every action with its target-policy probability (exact
  bootstrap expectation, categorical KL);
* `ff_mpo_continuous`: continuous ones sample `system.num_samples` actions from the target
  policy (decoupled mean / standard-deviation KL bounds).

Read top to bottom: critic views, the gradient step, then `build`.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    NStepBatch,
    Observation,
    OnlineAndTarget,
    Params,
    PRNGKey,
)
from stoix.errors import ConfigError
from stoix.networks.base import make_actor, make_q_network
from stoix.networks.deterministic import make_state_action_critic
from stoix.parallel import pmean_replicas
from stoix.system_api import BuildContext, SystemParts
from stoix.systems.mpo import mpo_losses
from stoix.systems.mpo.mpo_types import (
    DualParams,
    MPOLossInfo,
    MPOOptStates,
    MPOParams,
)
from stoix.systems.replay_base import (
    PolicyActor,
    ReplayActorCritic,
    clipped_policy_actor,
    policy_act,
    policy_eval,
    replay_system_parts,
    to_env_action,
)
from stoix.utils.config import RunPlan, check_range
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.replay import (
    ReplayLearnerState,
    make_trajectory_buffer,
    sample_n_step_batch,
    validate_replay,
)

# Dual log-parameters are kept above this after each step (softplus(−18) ≈ 1.5e-8), as in Acme.
MIN_LOG_DUAL = -18.0


class MPOHyperparameters(NamedTuple):
    discrete: bool  # static: the action kind picks the critic and the E-step
    gamma: float
    n_step: int
    batch_size: int  # per replica
    tau: float  # Polyak rate of the target actor and critic, per gradient step
    num_samples: int  # continuous: actions sampled per state for the E-step and the bootstrap
    reward_scale: float
    epsilons: mpo_losses.MPOEpsilons
    normalise_observations: bool


class Networks(NamedTuple):
    actor: PolicyActor
    # discrete: (params, obs) -> QValues with q_values [B, A]; continuous: (params, obs, a) -> [B]
    critic_apply: Callable[..., Any]
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    dual_optimiser: optax.GradientTransformation
    buffer: Any  # flashbax trajectory buffer


# CRITIC VIEWS: what the losses need from the critic, for either action kind


def q_of_action(
    networks: Networks, hp: MPOHyperparameters, critic: Params, obs: Observation, action: jax.Array
) -> jax.Array:
    """Q(s, a) [B] of the taken actions."""
    if hp.discrete:
        q = networks.critic_apply(critic, obs).q_values
        return jnp.take_along_axis(q, action[:, None], axis=-1)[:, 0]
    return networks.critic_apply(critic, obs, action)


def sampled_q(
    networks: Networks, hp: MPOHyperparameters, critic: Params, obs: Observation, actions: jax.Array
) -> jax.Array:
    """Q [N, B] of N actions [N, B, A] per state; the critic sees what the env would receive."""
    env_actions = to_env_action(networks.actor, actions)
    return jax.vmap(lambda a: networks.critic_apply(critic, obs, a))(env_actions)


def bootstrap_value(
    networks: Networks, hp: MPOHyperparameters, params: MPOParams, obs: Observation, key: PRNGKey
) -> jax.Array:
    """E_{a∼π_target} Q_target(s, a) [B]: exact for discrete actions, sampled for continuous."""
    dist = networks.actor.apply(params.actor.target, obs)
    if hp.discrete:
        q = networks.critic_apply(params.critic.target, obs).q_values
        return mpo_losses.categorical_expected_value(dist.logits, q)
    actions = dist.sample(seed=key, sample_shape=hp.num_samples)
    return jnp.mean(sampled_q(networks, hp, params.critic.target, obs, actions), axis=0)


# THE GRADIENT STEP


def critic_loss(
    critic: Params,
    networks: Networks,
    hp: MPOHyperparameters,
    batch: NStepBatch,
    target: jax.Array,
) -> Tuple[jax.Array, jax.Array]:
    q = q_of_action(networks, hp, critic, batch.observation, batch.action)
    return 0.5 * jnp.mean(jnp.square(q - target)), jnp.mean(q)


def policy_loss(
    actor: Params,
    duals: DualParams,
    networks: Networks,
    hp: MPOHyperparameters,
    params: MPOParams,
    obs: Observation,
    key: PRNGKey,
) -> Tuple[jax.Array, mpo_losses.PolicyLossInfo]:
    """The E-step on the target policy and critic, the M-step on the online policy."""
    online = networks.actor.apply(actor, obs)
    target = jax.lax.stop_gradient(networks.actor.apply(params.actor.target, obs))
    if hp.discrete:
        q = networks.critic_apply(params.critic.target, obs).q_values
        return mpo_losses.categorical_mpo_loss(online.logits, target.logits, q, duals, hp.epsilons)
    actions = target.sample(seed=key, sample_shape=hp.num_samples)
    q = sampled_q(networks, hp, params.critic.target, obs, actions)
    return mpo_losses.gaussian_mpo_loss(
        online.loc,
        online.scale_diag,
        target.loc,
        target.scale_diag,
        actions,
        q,
        duals,
        hp.epsilons,
    )


def gradient_step(
    networks: Networks, hp: MPOHyperparameters, state: ReplayLearnerState, key: PRNGKey
) -> Tuple[ReplayLearnerState, MPOLossInfo]:
    """Samples a batch; steps the critic, the actor and the duals; moves the targets."""
    sample_key, bootstrap_key, e_step_key = jax.random.split(key, 3)
    batch = sample_n_step_batch(
        networks.buffer,
        state,
        sample_key,
        hp.gamma,
        networks.actor.normalise_observations,
        reward_scale=1.0,  # scaled in the target below
    )
    params = state.params

    # CRITIC: n-step TD toward the target policy's expected value under the target critic.
    next_value = bootstrap_value(networks, hp, params, batch.next_observation, bootstrap_key)
    target = jax.lax.stop_gradient(hp.reward_scale * batch.reward + batch.discount * next_value)
    (c_loss, q_mean), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
        params.critic.online, networks, hp, batch, target
    )

    # ACTOR AND DUALS: one loss, gradients to the policy and to the multipliers.
    (_, info), (actor_grads, dual_grads) = jax.value_and_grad(
        policy_loss, argnums=(0, 1), has_aux=True
    )(params.actor.online, params.duals, networks, hp, params, batch.observation, e_step_key)

    critic_grads, actor_grads, dual_grads = pmean_replicas((critic_grads, actor_grads, dual_grads))
    critic_updates, critic_opt = networks.critic_optimiser.update(
        critic_grads, state.opt_states.critic, params.critic.online
    )
    actor_updates, actor_opt = networks.actor_optimiser.update(
        actor_grads, state.opt_states.actor, params.actor.online
    )
    dual_updates, dual_opt = networks.dual_optimiser.update(
        dual_grads, state.opt_states.duals, params.duals
    )
    critic = optax.apply_updates(params.critic.online, critic_updates)
    actor = optax.apply_updates(params.actor.online, actor_updates)
    duals = jax.tree.map(
        lambda x: jnp.maximum(x, MIN_LOG_DUAL), optax.apply_updates(params.duals, dual_updates)
    )
    params = MPOParams(
        actor=OnlineAndTarget(actor, optax.incremental_update(actor, params.actor.target, hp.tau)),
        critic=OnlineAndTarget(
            critic, optax.incremental_update(critic, params.critic.target, hp.tau)
        ),
        duals=duals,
    )
    state = state._replace(
        params=params,
        opt_states=MPOOptStates(actor_opt, critic_opt, dual_opt),
        gradient_steps=state.gradient_steps + 1,
    )
    return state, MPOLossInfo(
        c_loss, q_mean, info.policy_loss, info.temperature, info.kl, info.alpha
    )


# SET-UP


def hyperparameters(cfg: DictConfig, plan: RunPlan, discrete: bool) -> MPOHyperparameters:
    sys_cfg = cfg.system
    return MPOHyperparameters(
        discrete=discrete,
        gamma=float(sys_cfg.gamma),
        n_step=int(sys_cfg.n_step),
        batch_size=int(sys_cfg.batch_size) // plan.num_replicas,
        tau=float(sys_cfg.tau),
        num_samples=int(sys_cfg.get("num_samples", 1)),
        reward_scale=float(sys_cfg.reward_scale),
        epsilons=mpo_losses.MPOEpsilons(
            temperature=float(sys_cfg.epsilon),
            mean=float(sys_cfg.epsilon_policy if discrete else sys_cfg.epsilon_mean),
            stddev=float(sys_cfg.get("epsilon_stddev", 0.0)),
        ),
        normalise_observations=bool(sys_cfg.normalise_observations),
    )


def build(ctx: BuildContext) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    sys_cfg = cfg.system
    discrete = env.spec.action_kind == "discrete"
    hp = hyperparameters(cfg, plan, discrete)
    actor_net = make_actor(cfg.network, env.spec)
    critic_net = (
        make_q_network(cfg.network, env.spec) if discrete else make_state_action_critic(cfg.network)
    )
    clip = float(sys_cfg.max_grad_norm)
    networks = Networks(
        actor=clipped_policy_actor(actor_net.apply, env.spec, hp.normalise_observations),
        critic_apply=critic_net.apply,
        actor_optimiser=clipped_optimiser(float(sys_cfg.actor_lr), clip),
        critic_optimiser=clipped_optimiser(float(sys_cfg.critic_lr), clip),
        dual_optimiser=clipped_optimiser(float(sys_cfg.dual_lr), clip),
        buffer=make_trajectory_buffer(plan, int(sys_cfg.buffer_size), hp.batch_size, hp.n_step),
    )
    # One multiplier for the categorical KL; one per action dimension for each Gaussian KL.
    alpha_shape = (1, 1) if discrete else (2, env.spec.num_actions)

    def init_shared(
        params_key: PRNGKey, tuned: Mapping[str, jax.Array]
    ) -> Tuple[MPOParams, MPOOptStates]:
        del tuned  # MPO sweeps nothing (AnakinSystem.sweepable is empty)
        actor_key, critic_key, example_key = jax.random.split(params_key, 3)
        _, example = env.reset(example_key)
        actor = actor_net.init(actor_key, example.observation)
        if discrete:
            critic = critic_net.init(critic_key, example.observation)
        else:
            critic = critic_net.init(
                critic_key, example.observation, jnp.zeros((env.spec.num_actions,), jnp.float32)
            )
        duals = DualParams(
            log_temperature=jnp.asarray(float(sys_cfg.init_log_temperature), jnp.float32),
            log_alpha=jnp.full(alpha_shape, float(sys_cfg.init_log_alpha), jnp.float32),
        )
        params = MPOParams(OnlineAndTarget(actor, actor), OnlineAndTarget(critic, critic), duals)
        opt_states = MPOOptStates(
            networks.actor_optimiser.init(actor),
            networks.critic_optimiser.init(critic),
            networks.dual_optimiser.init(duals),
        )
        return params, opt_states

    return replay_system_parts(
        ctx,
        ReplayActorCritic(
            buffer=networks.buffer,
            init_shared=init_shared,
            acting_params=lambda params: params.actor.online,
            act=policy_act(networks.actor),
            eval_act=policy_eval(networks.actor),
            gradient_step=functools.partial(gradient_step, networks, hp),
            # WARM-UP: the initial (near-uniform) policy fills the buffer before the first step.
            random_action=None,
        ),
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    sys_cfg = cfg.system
    validate_replay(cfg, plan)
    for key in ("gamma", "tau"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("actor_lr", "critic_lr", "dual_lr", "epsilon", "reward_scale"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    for key in ("epsilon_policy", "epsilon_mean", "epsilon_stddev"):
        if key in sys_cfg:
            check_range(cfg, f"system.{key}", 0.0, float("inf"))
    if "num_samples" in sys_cfg:
        check_range(cfg, "system.num_samples", 1, float("inf"))
    if float(sys_cfg.max_grad_norm) <= 0:
        raise ConfigError(f"system.max_grad_norm={sys_cfg.max_grad_norm} must be positive")
    head = str(cfg.network.actor_network.action_head._target_)
    if head.endswith("TanhNormalHead"):
        raise ConfigError(
            f"network.actor_network.action_head={head}: MPO's decoupled KL bounds need an "
            "unsquashed Gaussian (stoix.networks.heads.NormalHead)"
        )
