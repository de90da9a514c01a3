"""On-policy V-MPO (Song et al., 2019) over the on-policy base, for both action kinds.

The base's rollout, observation statistics and GAE (`on_policy_learning.collect`) feed V-MPO's
update: an E-step that weights the top half of the samples by exp(advantage / η), and an M-step
that fits the policy to those weights while the KL from the policy that collected the rollout
stays within a bound. The temperature η and the KL multipliers α are Lagrange duals
(`rlax.vmpo_loss`), learned in log space beside the networks with an optimiser of their own. The
critic regresses on the GAE value targets. A Gaussian policy (`ff_vmpo_continuous.py`) gets
separate bounds on how far its mean and its std move; the two system files share all of this.

Each replica picks its top-k advantages within its own minibatch (rlax's cross-device top-k
would gather every replica's batch); the gradients of all replicas are then averaged as usual.
"""

import functools
from typing import Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import Environment, Params, PRNGKey, TrainMetrics
from stoix.networks.distributions import policy_entropy
from stoix.parallel import pmean_replicas
from stoix.system_api import BuildContext, SystemParts
from stoix.systems.on_policy_base import (
    anakin_parts,
    init_actor_critic,
    make_networks,
    validate_on_policy,
)
from stoix.systems.on_policy_learning import (
    MinibatchData,
    Networks,
    apply_grads,
    collect,
    learn_epochs,
)
from stoix.systems.ppo.ppo_types import PPOLearnerState
from stoix.systems.vmpo.vmpo_losses import policy_kls, vmpo_policy_loss
from stoix.systems.vmpo.vmpo_types import DualParams, VMPOLossInfo, VMPOOptStates, VMPOParams
from stoix.utils.config import RunPlan, check_range


class VMPOHyperparameters(NamedTuple):
    gamma: float
    gae_lambda: float
    rollout_length: int
    normalise_observations: bool
    epochs: int
    num_minibatches: int
    value_coefficient: float
    top_k_fraction: float
    epsilon_temperature: float
    epsilon_alpha: Tuple[float, ...]  # one bound per KL constraint (see `policy_kls`)


# LOSSES AND THE MINIBATCH STEP


def policy_loss(
    actor_params: Params,
    dual_params: DualParams,
    old_actor_params: Params,
    networks: Networks,
    hp: VMPOHyperparameters,
    batch: MinibatchData,
) -> Tuple[jax.Array, VMPOLossInfo]:
    dist = networks.actor_apply(actor_params, batch.observation)
    old_dist = networks.actor_apply(old_actor_params, batch.observation)
    loss, stats = vmpo_policy_loss(
        dist.log_prob(batch.action),
        batch.advantage,
        policy_kls(old_dist, dist),
        dual_params,
        hp.epsilon_temperature,
        hp.epsilon_alpha,
        hp.top_k_fraction,
    )
    zero = jnp.zeros(())
    entropy = jax.lax.stop_gradient(policy_entropy(dist).mean())
    info = VMPOLossInfo(
        stats.policy_loss,
        zero,
        stats.temperature_loss,
        stats.temperature,
        stats.alpha,
        stats.kl,
        entropy,
    )
    return loss, info


def critic_loss(
    critic_params: Params, networks: Networks, hp: VMPOHyperparameters, batch: MinibatchData
) -> jax.Array:
    values = networks.critic_apply(critic_params, batch.observation)
    return hp.value_coefficient * 0.5 * jnp.mean(jnp.square(values - batch.target))


def minibatch_step(
    networks: Networks,
    dual_optimiser: optax.GradientTransformation,
    hp: VMPOHyperparameters,
    old_actor_params: Params,
    carry: Tuple[VMPOParams, VMPOOptStates],
    batch: MinibatchData,
) -> Tuple[Tuple[VMPOParams, VMPOOptStates], VMPOLossInfo]:
    params, opt_states = carry
    (actor_grads, dual_grads), info = jax.grad(policy_loss, argnums=(0, 1), has_aux=True)(
        params.actor_params, params.dual_params, old_actor_params, networks, hp, batch
    )
    value_loss, critic_grads = jax.value_and_grad(critic_loss)(
        params.critic_params, networks, hp, batch
    )
    grads = pmean_replicas((actor_grads, critic_grads, dual_grads))
    optimisers = (*networks.optimisers, dual_optimiser)
    return apply_grads(optimisers, params, opt_states, grads), info._replace(value_loss=value_loss)


# ONE UPDATE: the base's rollout and GAE, then epochs × minibatches of V-MPO steps


def update_step(
    networks: Networks,
    dual_optimiser: optax.GradientTransformation,
    env: Environment,
    hp: VMPOHyperparameters,
    state: PPOLearnerState,
) -> Tuple[PPOLearnerState, TrainMetrics]:
    # The KL is measured from the policy that collected the rollout: the params before learning.
    rollout_actor_params = state.params.actor_params
    state, traj, flat = collect(networks, env, hp, state)
    step = functools.partial(minibatch_step, networks, dual_optimiser, hp, rollout_actor_params)
    return learn_epochs(step, hp, state, traj, flat)


# SET-UP


def build(ctx: BuildContext) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    sys_cfg = cfg.system
    continuous = env.spec.action_kind == "continuous"
    if continuous:
        epsilon_alpha = (float(sys_cfg.epsilon_alpha_mean), float(sys_cfg.epsilon_alpha_std))
    else:
        epsilon_alpha = (float(sys_cfg.epsilon_alpha),)
    hp = VMPOHyperparameters(
        gamma=float(sys_cfg.gamma),
        gae_lambda=float(sys_cfg.gae_lambda),
        rollout_length=plan.rollout_length,
        normalise_observations=bool(sys_cfg.normalise_observations),
        epochs=int(sys_cfg.epochs),
        num_minibatches=int(sys_cfg.num_minibatches),
        value_coefficient=float(sys_cfg.value_coefficient),
        top_k_fraction=float(sys_cfg.top_k_fraction),
        epsilon_temperature=float(sys_cfg.epsilon_temperature),
        epsilon_alpha=epsilon_alpha,
    )
    grad_steps = plan.num_updates * hp.epochs * hp.num_minibatches
    actor, critic, networks = make_networks(cfg, env.spec, grad_steps)
    dual_optimiser = optax.adam(float(sys_cfg.dual_lr))
    init_duals = DualParams(
        log_temperature=jnp.log(jnp.float32(sys_cfg.init_temperature)),
        log_alpha=jnp.full((len(epsilon_alpha),), jnp.log(float(sys_cfg.init_alpha)), jnp.float32),
    )

    def init_shared(
        params_key: PRNGKey, tuned: Mapping[str, jax.Array]
    ) -> Tuple[VMPOParams, VMPOOptStates]:
        del tuned  # V-MPO sweeps nothing (AnakinSystem.sweepable is empty)
        (actor_params, critic_params), (actor_opt, critic_opt) = init_actor_critic(
            env, actor, critic, networks, params_key
        )
        params = VMPOParams(actor_params, critic_params, init_duals)
        return params, VMPOOptStates(actor_opt, critic_opt, dual_optimiser.init(init_duals))

    update = functools.partial(update_step, networks, dual_optimiser, env, hp)
    return anakin_parts(ctx, hp, actor, networks, init_shared, update)


def validate_common(cfg: DictConfig, plan: RunPlan) -> None:
    """The checks of both action kinds; each system file adds its KL bounds."""
    validate_on_policy(cfg, plan)
    check_range(cfg, "system.top_k_fraction", 1e-6, 1.0)
    for key in ("epsilon_temperature", "dual_lr", "init_temperature", "init_alpha"):
        check_range(cfg, f"system.{key}", 1e-12, float("inf"))
