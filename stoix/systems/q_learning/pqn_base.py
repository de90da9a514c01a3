"""What the PQN family shares (Gallici et al., 2025, "Simplifying Deep Temporal Difference
Learning"): an online Q-learner with many vectorised envs instead of a replay buffer, a
normalised network (LayerNorm, `network=mlp_pqn`) instead of a target network, and Q(λ)
targets computed once per rollout.

Built on it:

* ff_pqn (Anakin): everything here as it is (`PQN`: Q(λ) targets bootstrapped from
  max_a Q(s', a), the squared error of Q(s, a)).
* ff_pqn_vdn (Anakin): its own targets and loss (`PQNLearning`), summed over agents.
* rec_pqn (Anakin): a recurrent network, so its own rollout, targets and minibatches (whole
  env sequences); it shares the hyperparameters, the optimiser, the ε schedule, the
  sweepable initial state (`make_init_shared`) and the checks.
* Sebulba PQN: the targets, the minibatch step, the optimiser, ε and the checks, on rollouts
  its actor threads collect.
* ff_pqn_continuous (Anakin): a deterministic actor and twin critics, so little of this;
  it shares the minibatch check.

Read top to bottom: the rollout, the targets, the minibatch step, the update, the set-up.
Acting (ε-greedy, the evaluation act) is the family's `q_acting`, shared with the DQN family.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    Environment,
    Observation,
    OptState,
    Params,
    PRNGKey,
    TimeStep,
    TrainMetrics,
    summarise_episodes,
)
from stoix.networks.base import make_q_network
from stoix.parallel import pmean_replicas
from stoix.system_api import BuildContext, SystemParts
from stoix.systems.q_learning.q_acting import epsilon_greedy, q_eval_act
from stoix.utils.config import RunPlan, check_divides, check_range
from stoix.utils.minibatches import masked_mean, run_epochs
from stoix.utils.multistep import q_lambda_targets
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.rollout import RolloutEnd, env_rollout

# Every Anakin member reads these from the state `init_shared` builds, so runs can sweep them.
SWEEPABLE = ("system.q_lr", "system.q_lambda")


class PQNHyperparameters(NamedTuple):
    gamma: float
    q_lambda: float
    rollout_length: int
    epochs: int
    num_minibatches: int
    epsilon_start: float
    epsilon_end: float
    epsilon_decay_steps: int  # env steps per replica over which ε decays linearly (≥ 1)
    evaluation_epsilon: float
    reward_scale: float


class PQNLearnerState(NamedTuple):
    """One replica's learner state; leaves gain [D, S, B] axes in the runner."""

    params: Params  # the network variables: "params", and "batch_stats" with BatchNorm
    opt_state: OptState
    key: PRNGKey
    env_state: Any  # [N]
    observation: Observation  # [N] what the next rollout acts on first
    env_steps: jax.Array  # () int32, env steps taken by this replica (drives ε)
    q_lambda: jax.Array  # () this run's λ: state, not config, so runs can sweep it


class PQNTransition(NamedTuple):
    """One rollout step of N envs (time-major [T, N] after the rollout)."""

    observation: Observation
    action: jax.Array  # [N] int32
    reward: jax.Array  # [N]
    discount: jax.Array  # [N] 0 on termination
    episode_end: jax.Array  # [N] terminated or truncated: Q(λ) traces stop here
    next_observation: Observation  # true next observation (the final one at episode ends)
    # [N] the end of what the metrics count as an episode: the same as episode_end except in
    # envs where a lost life terminates but the game goes on (envpool's episodic_life).
    metrics_end: jax.Array
    episode_return: jax.Array  # [N] valid where metrics_end
    episode_length: jax.Array  # [N]


class PQNLossInfo(NamedTuple):
    loss: jax.Array
    q_mean: jax.Array  # mean Q(s_t, a_t)
    target_mean: jax.Array  # mean Q(λ) target
    epsilon: jax.Array  # exploration rate of the rollout


class Networks(NamedTuple):
    apply: Any
    optimiser: optax.GradientTransformation


# ROLLOUT


def rollout(
    networks: Networks,
    env: Environment,
    hp: PQNHyperparameters,
    state: PQNLearnerState,
    epsilon: jax.Array,
) -> Tuple[PQNLearnerState, PQNTransition]:
    params = state.params

    def act(carry: Tuple[()], observation: Observation, key: PRNGKey):
        q = networks.apply(params, observation).q_values
        action = epsilon_greedy(key, q, observation.action_mask, epsilon)
        return carry, action, action

    def record(observation: Observation, action: jax.Array, timestep: TimeStep) -> PQNTransition:
        return PQNTransition(
            observation=observation,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
            metrics_end=timestep.metrics.is_terminal_step,
            episode_return=timestep.metrics.episode_return,
            episode_length=timestep.metrics.episode_length,
        )

    start = RolloutEnd(state.key, state.env_state, state.observation, ())
    end, traj = env_rollout(env, act, record, start, hp.rollout_length)
    steps = state.env_steps + hp.rollout_length * traj.action.shape[1]
    state = state._replace(
        key=end.key, env_state=end.env_state, observation=end.observation, env_steps=steps
    )
    return state, traj


# TARGETS


def pqn_targets(
    networks: Networks,
    hp: PQNHyperparameters,
    params: Params,
    reward: jax.Array,
    discount: jax.Array,
    episode_end: jax.Array,
    next_observation: Observation,
    q_lambda: jax.Array | float,
) -> jax.Array:
    """Q(λ) targets over a [T, N] rollout, once per rollout, from each step's true next
    observation and the current parameters (no target network).

    Args:
        discount: [T, N], 0 where the episode terminated (γ is applied here).
        episode_end: [T, N], terminated or truncated: the λ-trace is cut there.
    """
    next_q = networks.apply(params, next_observation).q_values
    return q_lambda_targets(
        hp.reward_scale * reward,
        hp.gamma * discount,
        jnp.max(next_q, axis=-1),
        episode_end,
        q_lambda,
    )


def rollout_targets(
    networks: Networks,
    hp: PQNHyperparameters,
    params: Params,
    traj: PQNTransition,
    q_lambda: jax.Array,
) -> jax.Array:
    """`pqn_targets` of an Anakin rollout."""
    return pqn_targets(
        networks,
        hp,
        params,
        traj.reward,
        traj.discount,
        traj.episode_end,
        traj.next_observation,
        q_lambda,
    )


# THE MINIBATCH STEP


class Minibatch(NamedTuple):
    observation: Observation
    action: jax.Array
    target: jax.Array
    # Rows that count in the loss; None: all of them. Sebulba masks its env-reset steps.
    mask: jax.Array | None = None


# (params, batch statistics or None, networks, minibatch) -> (loss, (mean Q, new batch
# statistics or None))
QLoss = Callable[[Params, Any, Networks, Minibatch], Tuple[jax.Array, Tuple[jax.Array, Any]]]


def q_loss(
    params: Params, batch_stats: Any, networks: Networks, batch: Minibatch
) -> Tuple[jax.Array, Tuple[jax.Array, Any]]:
    """Squared error to the Q(λ) targets (a mean over the rows of `batch.mask`); with
    BatchNorm, also the batch's new statistics."""
    if batch_stats is None:
        out, new_stats = networks.apply({"params": params}, batch.observation), None
    else:
        out, updates = networks.apply(
            {"params": params, "batch_stats": batch_stats},
            batch.observation,
            train=True,
            mutable=["batch_stats"],
        )
        new_stats = updates["batch_stats"]
    q_sa = jnp.take_along_axis(out.q_values, batch.action[:, None], axis=-1)[:, 0]
    loss = 0.5 * masked_mean(jnp.square(q_sa - batch.target), batch.mask)
    return loss, (masked_mean(q_sa, batch.mask), new_stats)


def minibatch_step(
    loss: QLoss, networks: Networks, carry: Tuple[Params, OptState], batch: Minibatch
) -> Tuple[Tuple[Params, OptState], Tuple[jax.Array, jax.Array]]:
    # `variables` holds "params" and, for BatchNorm networks, "batch_stats"; only the former
    # is optimised, the latter is what the batch measured, averaged over replicas.
    variables, opt_state = carry
    batch_stats = variables.get("batch_stats")
    (value, (q_mean, new_stats)), grads = jax.value_and_grad(loss, has_aux=True)(
        variables["params"], batch_stats, networks, batch
    )
    grads = pmean_replicas(grads)
    updates, opt_state = networks.optimiser.update(grads, opt_state, variables["params"])
    new_variables = {"params": optax.apply_updates(variables["params"], updates)}
    if new_stats is not None:
        new_variables["batch_stats"] = pmean_replicas(new_stats)
    return (new_variables, opt_state), (value, q_mean)


# ONE UPDATE: rollout, Q(λ) targets, epochs × minibatches


class PQNLearning(NamedTuple):
    """What a feed-forward member changes in the update: its targets and its loss."""

    # (networks, hp, params, rollout [T, N], λ) -> Q(λ) targets [T, N]
    targets: Callable[[Networks, PQNHyperparameters, Params, PQNTransition, jax.Array], jax.Array]
    loss: QLoss


PQN = PQNLearning(targets=rollout_targets, loss=q_loss)


def update_step(
    networks: Networks,
    env: Environment,
    hp: PQNHyperparameters,
    learning: PQNLearning,
    state: PQNLearnerState,
) -> Tuple[PQNLearnerState, TrainMetrics]:
    epsilon = epsilon_schedule(hp)(state.env_steps)
    state, traj = rollout(networks, env, hp, state, epsilon)
    targets = learning.targets(networks, hp, state.params, traj, state.q_lambda)
    data = Minibatch(traj.observation, traj.action, jax.lax.stop_gradient(targets))
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
    step = functools.partial(minibatch_step, learning.loss, networks)
    (params, opt_state), key, (loss, q_mean) = run_epochs(
        step, (state.params, state.opt_state), flat, state.key, hp.epochs, hp.num_minibatches
    )
    info = PQNLossInfo(jnp.mean(loss), jnp.mean(q_mean), jnp.mean(targets), epsilon)
    metrics = summarise_episodes(traj.metrics_end, traj.episode_return, traj.episode_length, info)
    return state._replace(params=params, opt_state=opt_state, key=key), metrics


# SET-UP


def epsilon_schedule(hp: PQNHyperparameters) -> optax.Schedule:
    """ε as a function of the env steps one replica (Sebulba: one actor thread) has taken."""
    return optax.linear_schedule(hp.epsilon_start, hp.epsilon_end, hp.epsilon_decay_steps)


def pqn_hyperparameters(sys_cfg: DictConfig, plan: RunPlan) -> PQNHyperparameters:
    return PQNHyperparameters(
        gamma=float(sys_cfg.gamma),
        q_lambda=float(sys_cfg.q_lambda),
        rollout_length=plan.rollout_length,
        epochs=int(sys_cfg.epochs),
        num_minibatches=int(sys_cfg.num_minibatches),
        epsilon_start=float(sys_cfg.epsilon_start),
        epsilon_end=float(sys_cfg.epsilon_end),
        epsilon_decay_steps=plan.steps_per_replica(float(sys_cfg.epsilon_decay_fraction)),
        evaluation_epsilon=float(sys_cfg.evaluation_epsilon),
        reward_scale=float(sys_cfg.reward_scale),
    )


def make_optimiser(
    sys_cfg: DictConfig, plan: RunPlan, hp: PQNHyperparameters
) -> optax.GradientTransformation:
    """Global-norm clipping, RAdam, and the optional linear decay of the learning rate.

    The learning rate lives in the optimiser state (inject_hyperparams, the chain's element 1),
    so the runs of one program can each have their own (arch.sweep); the decay is a separate
    factor.
    """
    gradient_steps = plan.num_updates * hp.epochs * hp.num_minibatches
    return clipped_optimiser(
        float(sys_cfg.q_lr),
        float(sys_cfg.max_grad_norm),
        algorithm="radam",
        decay_steps=gradient_steps if bool(sys_cfg.decay_learning_rate) else None,
        sweepable=True,
    )


def make_init_shared(
    env: Environment,
    optimiser: optax.GradientTransformation,
    hp: PQNHyperparameters,
    init_variables: Callable[[PRNGKey, Observation], Tuple[Params, Params]],
) -> Callable[[PRNGKey, Mapping[str, jax.Array]], Tuple[Params, OptState, jax.Array]]:
    """The Anakin members' `init_shared`: the network's variables, the optimiser state with this
    run's learning rate, and this run's λ.

    Args:
        init_variables: (key, one env's observation) -> (all the network's variables, the part
            the optimiser steps).
    """

    def init_shared(
        params_key: PRNGKey, tuned: Mapping[str, jax.Array]
    ) -> Tuple[Params, OptState, jax.Array]:
        init_key, example_key = jax.random.split(params_key)
        _, example = env.reset(example_key)
        variables, optimised = init_variables(init_key, example.observation)
        opt_state = optimiser.init(optimised)
        if "system.q_lr" in tuned:
            opt_state[1].hyperparams["learning_rate"] = jnp.asarray(tuned["system.q_lr"])
        q_lambda = jnp.asarray(tuned.get("system.q_lambda", hp.q_lambda), jnp.float32)
        return variables, opt_state, q_lambda

    return init_shared


def make_build(learning: PQNLearning) -> Callable[[BuildContext], SystemParts]:
    """The Anakin parts of a feed-forward member that changes only `learning`."""

    def build(ctx: BuildContext) -> SystemParts:
        cfg, env, plan = ctx.config, ctx.env, ctx.plan
        hp = pqn_hyperparameters(cfg.system, plan)
        network = make_q_network(cfg.network, env.spec)
        networks = Networks(apply=network.apply, optimiser=make_optimiser(cfg.system, plan, hp))
        num_envs = plan.envs_per_replica

        def init_variables(key: PRNGKey, observation: Observation) -> Tuple[Params, Params]:
            variables = dict(network.init(key, observation))
            return variables, variables["params"]

        def init_state(
            shared: Tuple[Params, OptState, jax.Array], replica_key: PRNGKey
        ) -> PQNLearnerState:
            params, opt_state, q_lambda = shared
            env_key, state_key = jax.random.split(replica_key)
            env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
            return PQNLearnerState(
                params,
                opt_state,
                state_key,
                env_state,
                timestep.observation,
                jnp.zeros((), jnp.int32),
                q_lambda,
            )

        return SystemParts(
            init_shared=make_init_shared(env, networks.optimiser, hp, init_variables),
            init_state=init_state,
            update_step=functools.partial(update_step, networks, env, hp, learning),
            actor_params=lambda state: state.params,
            eval_act=q_eval_act(network.apply, hp.evaluation_epsilon),
        )

    return build


def validate_pqn(cfg: DictConfig) -> None:
    """The range checks every discrete PQN member shares."""
    for key in ("gamma", "q_lambda", "epsilon_start", "epsilon_end", "evaluation_epsilon"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    check_range(cfg, "system.epsilon_decay_fraction", 0.0, 1.0)
    check_range(cfg, "system.epochs", 1, float("inf"))
    check_range(cfg, "system.q_lr", 0.0, float("inf"))


def check_minibatches(cfg: DictConfig, plan: RunPlan) -> None:
    """Minibatches split one replica's env steps (envs × rollout steps) evenly."""
    check_divides(
        "arch.total_num_envs / (devices × arch.update_batch_size) × system.rollout_length",
        plan.envs_per_replica * plan.rollout_length,
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    """The checks of a feed-forward Anakin member (ff_pqn, ff_pqn_vdn)."""
    validate_pqn(cfg)
    check_minibatches(cfg, plan)
