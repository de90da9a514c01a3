"""PQN (Gallici et al., 2025, "Simplifying Deep Temporal Difference Learning") on Anakin.

An online Q-learner: many vectorised envs instead of a replay buffer, a normalised network
(LayerNorm, `network=mlp_pqn`) instead of a target network, and Q(λ) targets computed once per
rollout. Read top to bottom: the rollout, the targets, the minibatch step, the update, `build`.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    Observation,
    OptState,
    Params,
    PRNGKey,
    TrainMetrics,
    summarise_episodes,
)
from stoix.networks.base import make_q_network
from stoix.systems.q_learning.anakin.ff_dqn import epsilon_greedy
from stoix.utils.config import RunPlan, check_divides, check_range
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import masked_mean, run_epochs
from stoix.utils.multistep import q_lambda_targets
from stoix.utils.runner import AnakinSystem, BuildContext, SystemParts, pmean_replicas, run_anakin


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
    """One rollout step of N envs (time-major [T, N] after the rollout scan)."""

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
    env: Any,
    hp: PQNHyperparameters,
    state: PQNLearnerState,
    epsilon: jax.Array,
) -> Tuple[PQNLearnerState, PQNTransition]:
    params = state.params

    def step(carry: Tuple[PRNGKey, Any, Observation], _: None):
        key, env_state, observation = carry
        key, act_key = jax.random.split(key)
        q = networks.apply(params, observation).q_values
        action = epsilon_greedy(act_key, q, observation.action_mask, epsilon)
        env_state, timestep = jax.vmap(env.step)(env_state, action)
        transition = PQNTransition(
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
        return (key, env_state, timestep.observation), transition

    (key, env_state, observation), traj = jax.lax.scan(
        step, (state.key, state.env_state, state.observation), None, length=hp.rollout_length
    )
    steps = state.env_steps + hp.rollout_length * traj.action.shape[1]
    state = state._replace(key=key, env_state=env_state, observation=observation, env_steps=steps)
    return state, traj


# THE MINIBATCH STEP


class Minibatch(NamedTuple):
    observation: Observation
    action: jax.Array
    target: jax.Array
    # Rows that count in the loss; None: all of them. Sebulba masks its env-reset steps.
    mask: jax.Array | None = None


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
    networks: Networks, carry: Tuple[Params, OptState], batch: Minibatch
) -> Tuple[Tuple[Params, OptState], Tuple[jax.Array, jax.Array]]:
    # `variables` holds "params" and, for BatchNorm networks, "batch_stats"; only the former
    # is optimised, the latter is what the batch measured, averaged over replicas.
    variables, opt_state = carry
    batch_stats = variables.get("batch_stats")
    (loss, (q_mean, new_stats)), grads = jax.value_and_grad(q_loss, has_aux=True)(
        variables["params"], batch_stats, networks, batch
    )
    grads = pmean_replicas(grads)
    updates, opt_state = networks.optimiser.update(grads, opt_state, variables["params"])
    new_variables = {"params": optax.apply_updates(variables["params"], updates)}
    if new_stats is not None:
        new_variables["batch_stats"] = pmean_replicas(new_stats)
    return (new_variables, opt_state), (loss, q_mean)


# ONE UPDATE: rollout, Q(λ) targets, epochs × minibatches


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


def update_step(
    networks: Networks, env: Any, hp: PQNHyperparameters, state: PQNLearnerState
) -> Tuple[PQNLearnerState, TrainMetrics]:
    epsilon = epsilon_schedule(hp)(state.env_steps)
    state, traj = rollout(networks, env, hp, state, epsilon)
    targets = pqn_targets(
        networks,
        hp,
        state.params,
        traj.reward,
        traj.discount,
        traj.episode_end,
        traj.next_observation,
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


def epsilon_schedule(hp: PQNHyperparameters) -> optax.Schedule:
    """ε as a function of the env steps one replica (Sebulba: one actor thread) has taken."""
    return optax.linear_schedule(hp.epsilon_start, hp.epsilon_end, hp.epsilon_decay_steps)


def make_eval_act(
    apply: Callable[..., Any], hp: PQNHyperparameters
) -> Callable[[bool], Callable[[Params, Observation, PRNGKey], jax.Array]]:
    """Evaluation acting: greedy, or ε-greedy with `system.evaluation_epsilon`."""

    def eval_act(greedy: bool) -> Callable[[Params, Observation, PRNGKey], jax.Array]:
        epsilon = jnp.asarray(0.0 if greedy else hp.evaluation_epsilon)

        def act(params: Params, observation: Observation, key: PRNGKey) -> jax.Array:
            q = apply(params, observation).q_values
            return epsilon_greedy(key, q, observation.action_mask, epsilon)

        return act

    return eval_act


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
    optimiser = [
        optax.clip_by_global_norm(float(sys_cfg.max_grad_norm)),
        optax.inject_hyperparams(optax.radam)(learning_rate=float(sys_cfg.q_lr)),
    ]
    if bool(sys_cfg.decay_learning_rate):
        gradient_steps = plan.num_updates * hp.epochs * hp.num_minibatches
        optimiser.append(optax.scale_by_schedule(optax.linear_schedule(1.0, 0.0, gradient_steps)))
    return optax.chain(*optimiser)


def build(ctx: BuildContext, update: Callable[..., Any] | None = None) -> SystemParts:
    """PQN's parts; `update` (default: this file's `update_step`, same signature) lets a
    variant that changes only the learning step (e.g. ff_pqn_vdn) reuse everything else."""
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    update = update_step if update is None else update
    hp = pqn_hyperparameters(cfg.system, plan)
    network = make_q_network(cfg.network, env.spec)
    networks = Networks(apply=network.apply, optimiser=make_optimiser(cfg.system, plan, hp))
    num_envs = plan.envs_per_replica

    def init_shared(
        params_key: PRNGKey, tuned: Mapping[str, jax.Array]
    ) -> Tuple[Params, OptState, jax.Array]:
        init_key, example_key = jax.random.split(params_key)
        _, example = env.reset(example_key)
        params = dict(network.init(init_key, example.observation))
        opt_state = networks.optimiser.init(params["params"])
        if "system.q_lr" in tuned:
            opt_state[1].hyperparams["learning_rate"] = jnp.asarray(tuned["system.q_lr"])
        q_lambda = jnp.asarray(tuned.get("system.q_lambda", hp.q_lambda), jnp.float32)
        return params, opt_state, q_lambda

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
        init_shared=init_shared,
        init_state=init_state,
        update_step=functools.partial(update, networks, env, hp),
        actor_params=lambda state: state.params,
        eval_act=make_eval_act(network.apply, hp),
    )


def validate_pqn(cfg: DictConfig) -> None:
    """The range checks every PQN variant shares."""
    for key in ("gamma", "q_lambda", "epsilon_start", "epsilon_end", "evaluation_epsilon"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    check_range(cfg, "system.epsilon_decay_fraction", 0.0, 1.0)
    check_range(cfg, "system.epochs", 1, float("inf"))
    check_range(cfg, "system.q_lr", 0.0, float("inf"))


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_pqn(cfg)
    check_divides(
        "arch.total_num_envs / (devices × arch.update_batch_size) × system.rollout_length",
        plan.envs_per_replica * plan.rollout_length,
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )


SYSTEM = AnakinSystem(
    name="ff_pqn",
    action_kinds=("discrete",),
    build=build,
    validate=validate,
    sweepable=("system.q_lr", "system.q_lambda"),
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PQN as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_pqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
