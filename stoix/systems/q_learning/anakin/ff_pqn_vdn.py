"""PQN-VDN on Anakin: PQN (see ff_pqn.py) for cooperative multi-agent tasks.

Every agent acts with one shared LayerNorm Q-network on its own observation (which carries a
one-hot agent id). Value decomposition (VDN, Sunehag et al., 2018) trains the team value
Q_tot(s, a) = Σ_i Q_i(o_i, a_i) on the team reward; the Q(λ) targets bootstrap from
Σ_i max over agent i's VALID actions of Q_i(o'_i, ·). Environments put the agents on a leading
axis of every observation leaf ([num_agents, ...], see stoix/wrappers/jaxmarl.py), so the
rollout and optimiser are PQN's; only the targets and the loss sum over agents.
"""

import functools
from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    Observation,
    OptState,
    Params,
    TrainMetrics,
    summarise_episodes,
)
from stoix.systems.q_learning.anakin import ff_pqn
from stoix.systems.q_learning.anakin.ff_pqn import (
    Networks,
    PQNHyperparameters,
    PQNLearnerState,
    PQNLossInfo,
    rollout,
)
from stoix.utils.config import ConfigError, RunPlan
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import run_epochs
from stoix.utils.multistep import q_lambda_targets
from stoix.utils.runner import AnakinSystem, BuildContext, SystemParts, pmean_replicas, run_anakin

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


# THE MINIBATCH STEP


class Minibatch(NamedTuple):
    observation: Observation  # leaves [B, agents, ...]
    action: jax.Array  # [B, agents] int32
    target: jax.Array  # [B] Q(λ) target of Q_tot


def vdn_loss(params: Params, networks: Networks, batch: Minibatch) -> Tuple[jax.Array, jax.Array]:
    """Squared error of Q_tot(s, a) = Σ_i Q_i(o_i, a_i) to the team target; also mean Q_tot."""
    q = networks.apply({"params": params}, batch.observation).q_values
    q_taken = jnp.take_along_axis(q, batch.action[..., None], axis=-1)[..., 0]
    q_tot = jnp.sum(q_taken, axis=-1)
    return 0.5 * jnp.mean(jnp.square(q_tot - batch.target)), jnp.mean(q_tot)


def minibatch_step(
    networks: Networks, carry: Tuple[Params, OptState], batch: Minibatch
) -> Tuple[Tuple[Params, OptState], Tuple[jax.Array, jax.Array]]:
    variables, opt_state = carry
    (loss, q_mean), grads = jax.value_and_grad(vdn_loss, has_aux=True)(
        variables["params"], networks, batch
    )
    grads = pmean_replicas(grads)
    updates, opt_state = networks.optimiser.update(grads, opt_state, variables["params"])
    return ({"params": optax.apply_updates(variables["params"], updates)}, opt_state), (
        loss,
        q_mean,
    )


# ONE UPDATE: rollout, VDN Q(λ) targets, epochs × minibatches


def update_step(
    networks: Networks, env: Any, hp: PQNHyperparameters, state: PQNLearnerState
) -> Tuple[PQNLearnerState, TrainMetrics]:
    epsilon = optax.linear_schedule(hp.epsilon_start, hp.epsilon_end, hp.epsilon_decay_steps)(
        state.env_steps
    )
    # PQN's rollout acts per agent: the Q-values are [N, agents, A] and ε-greedy draws one
    # exploration coin per agent, within each agent's mask.
    state, traj = rollout(networks, env, hp, state, epsilon)
    next_q = networks.apply(state.params, traj.next_observation).q_values
    targets = vdn_targets(
        next_q,
        hp.reward_scale * traj.reward,
        traj.discount,
        traj.episode_end,
        hp.gamma,
        state.q_lambda,
    )
    data = Minibatch(traj.observation, traj.action, jax.lax.stop_gradient(targets))
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
    step = functools.partial(minibatch_step, networks)
    (params, opt_state), key, (loss, q_mean) = run_epochs(
        step, (state.params, state.opt_state), flat, state.key, hp.epochs, hp.num_minibatches
    )
    info = PQNLossInfo(jnp.mean(loss), jnp.mean(q_mean), jnp.mean(targets), epsilon)
    metrics = summarise_episodes(traj.metrics_end, traj.episode_return, traj.episode_length, info)
    return state._replace(params=params, opt_state=opt_state, key=key), metrics


# SET-UP


def build(ctx: BuildContext) -> SystemParts:
    cfg, env = ctx.config, ctx.env
    if len(env.spec.observation_shape) != 2:
        raise ConfigError(
            f"ff_pqn_vdn needs observations [num_agents, obs_dim], but env={cfg.env.suite}/"
            f"{cfg.env.task_name} gives {env.spec.observation_shape}"
        )
    # Only the learning step differs from PQN's: the network, acting, exploration and the
    # optimiser are ff_pqn's, applied over the agent axis.
    return ff_pqn.build(ctx, update=update_step)


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
    ff_pqn.validate(cfg, plan)


SYSTEM = AnakinSystem(
    name="ff_pqn_vdn",
    action_kinds=("discrete",),
    build=build,
    validate=validate,
    sweepable=("system.q_lr", "system.q_lambda"),
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PQN-VDN as configured; returns the last evaluation's mean team return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_pqn_vdn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
