"""What AWR (Peng et al., 2019) for discrete and for continuous actions share on Anakin: all of
its machinery; the network config supplies a categorical or a Gaussian policy.

Rollouts of the stochastic policy go into an on-device flashbax trajectory buffer (the replay
loop of `stoix.utils.replay`, assembled by `stoix.systems.replay_base`; the initial policy fills
it first). Each gradient step samples sequences of `system.sequence_length` consecutive steps,
computes TD(λ) value targets and advantages over them with the current critic (traces stop at
episode ends; truncations bootstrap from the true final observation), regresses the critic onto
the targets and the policy onto the replayed actions, weighted by min(exp(A/β), max_weight).
What each member changes:

* `ff_awr`: discrete actions, a categorical policy;
* `ff_awr_continuous`: a Gaussian policy whose samples are clipped to the env's bounds before
  they are stored, so the policy regresses onto the actions the env actually received.

Read top to bottom: the targets, the gradient step, then `build`.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    ActorCriticOptStates,
    ActorCriticParams,
    Observation,
    Params,
    PRNGKey,
    Transition,
)
from stoix.errors import ConfigError
from stoix.networks.base import make_actor, make_critic
from stoix.parallel import pmean_replicas
from stoix.system_api import BuildContext, SystemParts
from stoix.systems.awr.awr_losses import awr_policy_loss
from stoix.systems.awr.awr_types import AWRLossInfo
from stoix.systems.ppo.ppo_losses import standardise
from stoix.systems.replay_base import (
    PolicyActor,
    ReplayActorCritic,
    clipped_policy_actor,
    policy_act,
    policy_eval,
    replay_system_parts,
)
from stoix.utils.config import RunPlan, check_range
from stoix.utils.multistep import generalized_advantage_estimation
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.replay import (
    ReplayLearnerState,
    check_batch_split,
    check_buffer_length,
    check_warmup_samples,
    make_trajectory_buffer,
)
from stoix.utils.running_statistics import observe


class AWRHyperparameters(NamedTuple):
    gamma: float
    td_lambda: float
    reward_scale: float  # rewards are multiplied by this in the targets
    beta: float  # temperature of the advantage weights
    max_weight: float  # weights are clipped at this
    standardise_advantages: bool
    normalise_observations: bool


class Networks(NamedTuple):
    actor: PolicyActor
    critic_apply: Callable[[Params, Observation], jax.Array]
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    buffer: Any  # flashbax trajectory buffer sampling [B, sequence_length] sequences


class SequenceBatch(NamedTuple):
    """Sampled sequences flattened to [B × L] samples, as the losses consume them."""

    observation: Observation  # as the networks see them
    action: jax.Array  # [B·L] or [B·L, A]
    target: jax.Array  # [B·L] TD(λ) value targets
    advantage: jax.Array  # [B·L] target − V(s)


# TARGETS


def td_lambda_targets(
    networks: Networks,
    hp: AWRHyperparameters,
    critic: Params,
    sequences: Transition,
) -> Tuple[jax.Array, jax.Array]:
    """TD(λ) advantages and value targets [B, L] of sampled sequences (networks' views).

    GAE's recursion over the time-major sequence gives A_t and the target A_t + V(s_t); each
    step bootstraps from its own TRUE next observation, so the last step of a sequence is a
    one-step target and a truncation inside it bootstraps from the episode's final state.
    """
    both = jax.tree.map(
        lambda a, b: jnp.stack([a, b]), sequences.observation, sequences.next_observation
    )
    values, next_values = networks.critic_apply(critic, both)  # [B, L] each

    def time_major(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x, 0, 1)

    discounts = hp.gamma * (1.0 - sequences.terminated.astype(jnp.float32))
    advantages, targets = generalized_advantage_estimation(
        time_major(hp.reward_scale * sequences.reward),
        time_major(values),
        time_major(next_values),
        time_major(discounts),
        time_major(sequences.episode_end),
        hp.td_lambda,
    )
    return time_major(advantages), time_major(targets)


# THE GRADIENT STEP


def critic_loss(critic: Params, networks: Networks, batch: SequenceBatch) -> Tuple[jax.Array, Any]:
    values = networks.critic_apply(critic, batch.observation)
    return 0.5 * jnp.mean(jnp.square(values - batch.target)), jnp.mean(values)


def actor_loss(
    actor: Params, networks: Networks, hp: AWRHyperparameters, batch: SequenceBatch
) -> Tuple[jax.Array, jax.Array]:
    dist = networks.actor.apply(actor, batch.observation)
    advantage = standardise(batch.advantage) if hp.standardise_advantages else batch.advantage
    return awr_policy_loss(dist.log_prob(batch.action), advantage, hp.beta, hp.max_weight)


def gradient_step(
    networks: Networks,
    hp: AWRHyperparameters,
    state: ReplayLearnerState,
    key: PRNGKey,
) -> Tuple[ReplayLearnerState, AWRLossInfo]:
    """Samples sequences, computes their TD(λ) targets, steps the critic and the actor."""
    sequences = networks.buffer.sample(state.buffer_state, key).experience  # [B, L]
    normalise = networks.actor.normalise_observations
    sequences = sequences._replace(
        observation=observe(state.obs_stats, sequences.observation, normalise),
        next_observation=observe(state.obs_stats, sequences.next_observation, normalise),
    )
    params = state.params
    advantages, targets = jax.lax.stop_gradient(
        td_lambda_targets(networks, hp, params.critic_params, sequences)
    )
    flat = SequenceBatch(sequences.observation, sequences.action, targets, advantages)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), flat)

    (c_loss, value_mean), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
        params.critic_params, networks, flat
    )
    (a_loss, weights), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        params.actor_params, networks, hp, flat
    )
    actor_grads, critic_grads = pmean_replicas((actor_grads, critic_grads))
    actor_updates, actor_opt = networks.actor_optimiser.update(
        actor_grads, state.opt_states.actor_opt_state, params.actor_params
    )
    critic_updates, critic_opt = networks.critic_optimiser.update(
        critic_grads, state.opt_states.critic_opt_state, params.critic_params
    )
    state = state._replace(
        params=ActorCriticParams(
            optax.apply_updates(params.actor_params, actor_updates),
            optax.apply_updates(params.critic_params, critic_updates),
        ),
        opt_states=ActorCriticOptStates(actor_opt, critic_opt),
    )
    info = AWRLossInfo(
        critic_loss=c_loss,
        actor_loss=a_loss,
        value_mean=value_mean,
        advantage_mean=jnp.mean(advantages),
        weight_mean=jnp.mean(weights),
        weight_clip_fraction=jnp.mean((weights >= hp.max_weight).astype(jnp.float32)),
    )
    return state, info


# SET-UP


def build(ctx: BuildContext) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    sys_cfg = cfg.system
    hp = AWRHyperparameters(
        gamma=float(sys_cfg.gamma),
        td_lambda=float(sys_cfg.td_lambda),
        reward_scale=float(sys_cfg.reward_scale),
        beta=float(sys_cfg.beta),
        max_weight=float(sys_cfg.max_weight),
        standardise_advantages=bool(sys_cfg.standardise_advantages),
        normalise_observations=bool(sys_cfg.normalise_observations),
    )
    actor_net, critic_net = make_actor(cfg.network, env.spec), make_critic(cfg.network)
    clip = float(sys_cfg.max_grad_norm)
    networks = Networks(
        actor=clipped_policy_actor(actor_net.apply, env.spec, hp.normalise_observations),
        critic_apply=critic_net.apply,
        actor_optimiser=clipped_optimiser(float(sys_cfg.actor_lr), clip),
        critic_optimiser=clipped_optimiser(float(sys_cfg.critic_lr), clip),
        buffer=make_trajectory_buffer(
            plan,
            int(sys_cfg.buffer_size),
            int(sys_cfg.batch_size) // plan.num_replicas,
            int(sys_cfg.sequence_length),
        ),
    )

    def init_shared(
        params_key: PRNGKey, tuned: Mapping[str, jax.Array]
    ) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
        del tuned  # AWR sweeps nothing (AnakinSystem.sweepable is empty)
        actor_key, critic_key, example_key = jax.random.split(params_key, 3)
        _, example = env.reset(example_key)
        params = ActorCriticParams(
            actor_net.init(actor_key, example.observation),
            critic_net.init(critic_key, example.observation),
        )
        opt_states = ActorCriticOptStates(
            networks.actor_optimiser.init(params.actor_params),
            networks.critic_optimiser.init(params.critic_params),
        )
        return params, opt_states

    return replay_system_parts(
        ctx,
        ReplayActorCritic(
            buffer=networks.buffer,
            init_shared=init_shared,
            acting_params=lambda params: params.actor_params,
            act=policy_act(networks.actor),
            eval_act=policy_eval(networks.actor),
            gradient_step=functools.partial(gradient_step, networks, hp),
            # WARM-UP: the initial (near-uniform) policy fills the buffer before the first step.
            random_action=None,
        ),
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    for key in ("batch_size", "buffer_size", "sequence_length", "gradient_steps_per_update"):
        check_range(cfg, f"system.{key}", 1, float("inf"))
    check_batch_split(cfg, plan)
    check_warmup_samples(cfg, "sequence_length")
    check_buffer_length(cfg, plan, "sequence_length")
    for key in ("gamma", "td_lambda"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("actor_lr", "critic_lr"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    for key in ("beta", "max_weight", "max_grad_norm", "reward_scale"):
        if check_range(cfg, f"system.{key}", 0.0, float("inf")) == 0.0:
            raise ConfigError(f"system.{key}=0 must be positive")
