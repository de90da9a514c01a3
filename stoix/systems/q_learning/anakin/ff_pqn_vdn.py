"""PQN-VDN on Anakin: PQN (see `pqn_base`) for cooperative multi-agent tasks.

Every agent acts with one shared LayerNorm Q-network on its own observation (which carries a
one-hot agent id). Value decomposition (VDN, Sunehag et al., 2018) trains the team value
Q_tot(s, a) = Σ_i Q_i(o_i, a_i) on the team reward; the Q(λ) targets bootstrap from
Σ_i max over agent i's VALID actions of Q_i(o'_i, ·). Environments put the agents on a leading
axis of every observation leaf ([num_agents, ...], see stoix/wrappers/jaxmarl.py), so the
rollout and optimiser are PQN's; only the targets and the loss sum over agents.
"""

from typing import Any, Tuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import Params
from stoix.errors import ConfigError
from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem, BuildContext, SystemParts
from stoix.systems.q_learning import pqn_base
from stoix.systems.q_learning.pqn_base import (
    SWEEPABLE,
    Minibatch,
    Networks,
    PQNHyperparameters,
    PQNLearning,
    PQNTransition,
)
from stoix.utils.config import RunPlan
from stoix.utils.entry import hydra_main
from stoix.utils.multistep import q_lambda_targets

# TARGETS


def vdn_next_values(next_q: jax.Array) -> jax.Array:
    """Σ_i max_a Q_i(o'_i, a): [..., agents, A] → [...].

    Invalid actions already hold the Q head's very negative value, so the max skips them.
    """
    return jnp.sum(jnp.max(next_q, axis=-1), axis=-1)


def vdn_targets(
    next_q: jax.Array,
    reward: jax.Array,
    discount: jax.Array,
    episode_end: jax.Array,
    gamma: float,
    q_lambda: jax.Array,
) -> jax.Array:
    """Q(λ) targets of Q_tot over one rollout.

    Args:
        next_q: [T, N, agents, A] Q-values at each step's true next observation, masked.
        reward, discount, episode_end: [T, N]; discount is 0 only on termination, and
            episode_end (terminated or truncated) cuts the traces.
    """
    return q_lambda_targets(
        reward, gamma * discount, vdn_next_values(next_q), episode_end, q_lambda
    )


def rollout_targets(
    networks: Networks,
    hp: PQNHyperparameters,
    params: Params,
    traj: PQNTransition,
    q_lambda: jax.Array,
) -> jax.Array:
    """`vdn_targets` of a rollout, with the current parameters."""
    next_q = networks.apply(params, traj.next_observation).q_values
    return vdn_targets(
        next_q,
        hp.reward_scale * traj.reward,
        traj.discount,
        traj.episode_end,
        hp.gamma,
        q_lambda,
    )


# THE LOSS: minibatches hold observations [B, agents, ...], actions [B, agents] and the team's
# targets [B]


def vdn_loss(
    params: Params, batch_stats: Any, networks: Networks, batch: Minibatch
) -> Tuple[jax.Array, Tuple[jax.Array, None]]:
    """Squared error of Q_tot(s, a) = Σ_i Q_i(o_i, a_i) to the team target; also mean Q_tot."""
    del batch_stats  # validate refuses BatchNorm torsos
    q = networks.apply({"params": params}, batch.observation).q_values
    q_taken = jnp.take_along_axis(q, batch.action[..., None], axis=-1)[..., 0]
    q_tot = jnp.sum(q_taken, axis=-1)
    return 0.5 * jnp.mean(jnp.square(q_tot - batch.target)), (jnp.mean(q_tot), None)


# SET-UP

# Only the learning step differs from PQN's: the network, acting, exploration and the optimiser
# are PQN's, applied over the agent axis. PQN's rollout acts per agent: the Q-values are
# [N, agents, A] and ε-greedy draws one exploration coin per agent, within each agent's mask.
_build = pqn_base.make_build(PQNLearning(targets=rollout_targets, loss=vdn_loss))


def build(ctx: BuildContext) -> SystemParts:
    cfg, env = ctx.config, ctx.env
    if len(env.spec.observation_shape) != 2:
        raise ConfigError(
            f"ff_pqn_vdn needs observations [num_agents, obs_dim], but env={cfg.env.suite}/"
            f"{cfg.env.task_name} gives {env.spec.observation_shape}"
        )
    return _build(ctx)


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    if str(cfg.env.suite) != "jaxmarl":
        raise ConfigError(
            f"ff_pqn_vdn needs a cooperative multi-agent env (env.suite=jaxmarl), "
            f"not env.suite={cfg.env.suite}; use ff_pqn for single-agent envs"
        )
    torso = cfg.network.q_network.pre_torso
    if bool(torso.get("use_batch_norm", False)) or bool(torso.get("noisy", False)):
        raise ConfigError(
            "ff_pqn_vdn supports LayerNorm MLP torsos only (network=mlp_pqn); "
            "use_batch_norm and noisy must be False"
        )
    pqn_base.validate(cfg, plan)


SYSTEM = AnakinSystem(
    name="ff_pqn_vdn",
    action_kinds=("discrete",),
    build=build,
    validate=validate,
    sweepable=SWEEPABLE,
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PQN-VDN as configured; returns the last evaluation's mean team return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_pqn_vdn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
