"""IMPALA (Espeholt et al., 2018) on the Sebulba architecture: V-trace corrects for the lag
between the actors' policy and the learner's.

Read top to bottom: the loss over env sequences (`stoix.systems.impala.impala_losses`), the
update (epochs × minibatches of whole env sequences), then `build`. Acting (the actors keep the
log-probability of the action they sampled), networks, optimisers and evaluation are the
on-policy base's (`stoix.systems.on_policy_base`); threads, queues and parameter publishing are
the Sebulba runner's.

    python stoix/systems/impala/sebulba/ff_impala.py env=envpool/cartpole
"""

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import ActorCriticOptStates, ActorCriticParams
from stoix.networks.distributions import policy_entropy
from stoix.parallel import pmean_replicas
from stoix.runners.sebulba import run_sebulba
from stoix.system_api import (
    Rollout,
    SebulbaBuildContext,
    SebulbaLayout,
    SebulbaParts,
    SebulbaSystem,
)
from stoix.systems.impala.impala_losses import VTraceInputs, vtrace_losses
from stoix.systems.on_policy_base import SebulbaLearnerState, sebulba_parts
from stoix.systems.on_policy_learning import Networks, apply_grads
from stoix.utils.config import RunPlan, check_divides, check_range
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import masked_mean, run_epochs


class IMPALAHyperparameters(NamedTuple):
    gamma: float
    vtrace_lambda: float
    clip_rho_threshold: float
    clip_pg_rho_threshold: float
    entropy_coefficient: float
    value_coefficient: float
    epochs: int
    num_minibatches: int


class IMPALALossInfo(NamedTuple):
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    mean_rho: jax.Array


# THE LOSS over a minibatch of env sequences ([N_mb, T] leaves, env-major for the shuffle)


def loss(
    params: ActorCriticParams, networks: Networks, hp: IMPALAHyperparameters, batch: Rollout
) -> Tuple[jax.Array, IMPALALossInfo]:
    time_major = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)
    observation = jax.tree.map(lambda x: x[:-1], time_major.observation)
    dist = networks.actor_apply(params.actor_params, observation)
    terms = vtrace_losses(
        VTraceInputs(
            values=networks.critic_apply(params.critic_params, time_major.observation),
            log_prob=dist.log_prob(time_major.extras.action),
            behaviour_log_prob=time_major.extras.log_prob,
            reward=time_major.reward,
            terminated=time_major.terminated,
            valid=time_major.valid,
        ),
        hp.gamma,
        hp.vtrace_lambda,
        hp.clip_rho_threshold,
        hp.clip_pg_rho_threshold,
    )
    entropy = masked_mean(policy_entropy(dist), time_major.valid)
    total = (
        terms.policy_loss
        + hp.value_coefficient * terms.value_loss
        - hp.entropy_coefficient * entropy
    )
    return total, IMPALALossInfo(terms.policy_loss, terms.value_loss, entropy, terms.mean_rho)


def minibatch_step(
    networks: Networks,
    hp: IMPALAHyperparameters,
    carry: Tuple[ActorCriticParams, ActorCriticOptStates],
    batch: Rollout,
) -> Tuple[Tuple[ActorCriticParams, ActorCriticOptStates], IMPALALossInfo]:
    params, opt_states = carry
    grads, info = jax.grad(loss, has_aux=True)(params, networks, hp, batch)
    grads = pmean_replicas(grads)
    return apply_grads(networks.optimisers, params, opt_states, grads), info


# THE UPDATE: epochs × minibatches of whole env sequences (V-trace needs the time order)


def learn(
    networks: Networks, hp: IMPALAHyperparameters, state: SebulbaLearnerState, rollout: Rollout
) -> Tuple[SebulbaLearnerState, IMPALALossInfo]:
    env_major = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rollout)
    step = functools.partial(minibatch_step, networks, hp)
    (params, opt_states), key, info = run_epochs(
        step, (state.params, state.opt_states), env_major, state.key, hp.epochs, hp.num_minibatches
    )
    return SebulbaLearnerState(params, opt_states, key), jax.tree.map(jnp.mean, info)


# SET-UP


def read_hyperparameters(sys_cfg: DictConfig) -> IMPALAHyperparameters:
    return IMPALAHyperparameters(
        gamma=float(sys_cfg.gamma),
        vtrace_lambda=float(sys_cfg.vtrace_lambda),
        clip_rho_threshold=float(sys_cfg.clip_rho_threshold),
        clip_pg_rho_threshold=float(sys_cfg.clip_pg_rho_threshold),
        entropy_coefficient=float(sys_cfg.entropy_coefficient),
        value_coefficient=float(sys_cfg.value_coefficient),
        epochs=int(sys_cfg.epochs),
        num_minibatches=int(sys_cfg.num_minibatches),
    )


def build(ctx: SebulbaBuildContext) -> SebulbaParts:
    hp = read_hyperparameters(ctx.config.system)
    return sebulba_parts(ctx, lambda networks: functools.partial(learn, networks, hp))


def validate(cfg: DictConfig, plan: RunPlan, layout: SebulbaLayout) -> None:
    check_divides(
        "arch.total_num_envs / learner devices",
        plan.total_num_envs // len(layout.learner_devices),
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )
    for key in ("gamma", "vtrace_lambda"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("actor_lr", "critic_lr", "max_grad_norm", "clip_rho_threshold"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    check_range(cfg, "system.clip_pg_rho_threshold", 0.0, float("inf"))
    check_range(cfg, "system.epochs", 1, float("inf"))


SYSTEM = SebulbaSystem(
    name="ff_impala", action_kinds=("discrete", "continuous"), build=build, validate=validate
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains IMPALA on Sebulba as configured; returns the last evaluation's mean return."""
    return run_sebulba(cfg, SYSTEM)


@hydra_main("ff_impala", arch_dir="default/sebulba")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
