"""What the DQN family shares: DQN, DDQN, M-DQN, DQN-Reg, C51, QR-DQN and Rainbow on Anakin.

A member is only a different per-sample loss, a `QVariant`, plugged into `make_q_system`; its
network (dueling, distributional, noisy) and replay (uniform or prioritised, n-step) are
config. DQN, DDQN, M-DQN, DQN-Reg and QR-DQN each write their own loss in their file; C51 and
Rainbow share `categorical_loss` (Rainbow is C51's loss with double-Q selection, prioritised
n-step replay and a noisy dueling network, all set by its config).

Read top to bottom: the rollout into the on-device replay buffer, the gradient step, the
update, then `make_q_system`. Acting (ε-greedy) is the family's `q_acting`.

The rollout and the warm-up are `stoix.utils.replay.collect` and `warm_up`, the loops every
replay system shares, with two fresh keys per step (the noisy layers' rng and the ε-greedy
draw, split together with the carried key); the warm-up acts ε-greedy with ε = 1.
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
    OnlineAndTarget,
    Params,
    PRNGKey,
    TrainMetrics,
    summarise_episodes,
)
from stoix.errors import ConfigError
from stoix.networks.base import make_q_network
from stoix.parallel import pmean_replicas
from stoix.system_api import AnakinSystem, BuildContext, SystemParts
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.q_acting import epsilon_greedy, q_eval_act
from stoix.systems.q_learning.q_types import (
    QBatch,
    QForward,
    QLearnerState,
    QLossInfo,
    QTransition,
)
from stoix.utils.config import RunPlan, check_range
from stoix.utils.optimisers import clipped_optimiser
from stoix.utils.replay import (
    ReplicaKeys,
    add_rollout,
    collect,
    make_trajectory_buffer,
    n_step_batch,
    validate_replay,
    warm_up,
)

ApplyFn = Callable[..., Any]
# (forward passes, n-step batch) -> (per-sample loss [B], per-sample priority [B])
VariantLoss = Callable[[QForward, QBatch], q_losses.LossAndPriority]


class QVariant(NamedTuple):
    """What tells one member of the family from another: a name and its loss."""

    name: str
    make_loss: Callable[[DictConfig], VariantLoss]  # system config -> loss


class QHyperparameters(NamedTuple):
    gamma: float
    n_step: int
    rollout_length: int
    gradient_steps_per_update: int
    batch_size: int  # per replica
    tau: float  # soft target update rate; 0 selects hard updates every target_update_period
    target_update_period: int
    epsilon_start: float
    epsilon_end: float
    epsilon_decay_steps: int  # env steps per replica over which ε decays linearly (≥ 1)
    evaluation_epsilon: float
    warmup_steps: int  # random steps per env before learning
    prioritised: bool
    priority_exponent: float
    importance_exponent_start: float  # β at the start; annealed to 1 over training
    priority_floor: float  # added to priorities so no transition becomes unsampleable


class Networks(NamedTuple):
    apply: ApplyFn
    optimiser: optax.GradientTransformation
    buffer: Any  # flashbax TrajectoryBuffer or PrioritisedTrajectoryBuffer
    loss: VariantLoss
    total_gradient_steps: int


# ROLLOUT


def noise(key: PRNGKey) -> dict:
    """The rng streams of a training forward pass; noisy layers draw from "noise", others ignore
    it. Evaluation passes none, so noisy layers act with their mean weights."""
    return {"noise": key}


def rollout(
    networks: Networks,
    env: Environment,
    hp: QHyperparameters,
    state: QLearnerState,
    epsilon: jax.Array,
) -> Tuple[QLearnerState, QTransition, Any]:
    """Steps all envs `rollout_length` times, ε-greedy in the online network."""
    key, env_state, observation, traj, episode_metrics = collect(
        env,
        epsilon_greedy_act(networks, state.params.online, epsilon),
        state.key,
        state.env_state,
        state.observation,
        hp.rollout_length,
        keys_per_step=2,
    )
    steps = state.env_steps + hp.rollout_length * observation.step_count.shape[0]
    state = state._replace(key=key, env_state=env_state, observation=observation, env_steps=steps)
    return state, traj, episode_metrics


def epsilon_greedy_act(
    networks: Networks, online: Params, epsilon: jax.Array
) -> Callable[[Observation, Tuple[PRNGKey, PRNGKey]], jax.Array]:
    """ε-greedy in the online network; each step gets two keys, the noisy layers' rng and the
    ε-greedy draw."""

    def act(observation: Observation, keys: Tuple[PRNGKey, PRNGKey]) -> jax.Array:
        noise_key, act_key = keys
        q = networks.apply(online, observation, rngs=noise(noise_key)).q_values
        return epsilon_greedy(act_key, q, observation.action_mask, epsilon)

    return act


def add_to_buffer(networks: Networks, buffer_state: Any, traj: QTransition) -> Any:
    return add_rollout(networks.buffer, buffer_state, traj)


# THE GRADIENT STEP


def fold_n_step(hp: QHyperparameters, sequences: QTransition) -> QBatch:
    """[B, n] sampled sequences → one n-step transition each."""
    return n_step_batch(sequences, hp.gamma)


def batch_loss(
    online: Params,
    target: Params,
    networks: Networks,
    batch: QBatch,
    weights: jax.Array,
    key: PRNGKey,
) -> Tuple[jax.Array, Tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(key, 4)
    frozen = jax.lax.stop_gradient(online)
    forward = QForward(
        online_tm1=networks.apply(online, batch.observation, rngs=noise(keys[0])),
        online_t=networks.apply(frozen, batch.next_observation, rngs=noise(keys[1])),
        target_tm1=networks.apply(target, batch.observation, rngs=noise(keys[2])),
        target_t=networks.apply(target, batch.next_observation, rngs=noise(keys[3])),
    )
    loss, priority = networks.loss(forward, batch)
    q_sa = jnp.take_along_axis(forward.online_tm1.q_values, batch.action[:, None], -1)[:, 0]
    return jnp.mean(weights * loss), (priority, jnp.mean(q_sa))


def gradient_step(
    networks: Networks, hp: QHyperparameters, state: QLearnerState, key: PRNGKey
) -> Tuple[QLearnerState, Tuple[jax.Array, jax.Array, jax.Array]]:
    """Samples a batch, takes one optimiser step, updates priorities and the target network."""
    sample_key, loss_key = jax.random.split(key)
    sample = networks.buffer.sample(state.buffer_state, sample_key)
    batch = fold_n_step(hp, sample.experience)
    if hp.prioritised:
        # Importance weights (N·P)^-β normalised by their batch maximum; N cancels out.
        progress = state.gradient_steps / max(networks.total_gradient_steps, 1)
        beta = hp.importance_exponent_start + progress * (1.0 - hp.importance_exponent_start)
        weights = jnp.power(jnp.maximum(sample.probabilities, 1e-12), -beta)
        weights = weights / jnp.max(weights)
    else:
        weights = jnp.ones_like(batch.reward)
    params = state.params
    (loss, (priority, q_mean)), grads = jax.value_and_grad(batch_loss, has_aux=True)(
        params.online, params.target, networks, batch, weights, loss_key
    )
    grads = pmean_replicas(grads)
    updates, opt_state = networks.optimiser.update(grads, state.opt_state, params.online)
    online = optax.apply_updates(params.online, updates)
    gradient_steps = state.gradient_steps + 1
    if hp.tau > 0:
        target = optax.incremental_update(online, params.target, hp.tau)
    else:
        target = optax.periodic_update(
            online, params.target, gradient_steps, hp.target_update_period
        )
    buffer_state = state.buffer_state
    if hp.prioritised:
        buffer_state = networks.buffer.set_priorities(
            buffer_state, sample.indices, priority + hp.priority_floor
        )
    state = state._replace(
        params=OnlineAndTarget(online, target),
        opt_state=opt_state,
        buffer_state=buffer_state,
        gradient_steps=gradient_steps,
    )
    return state, (loss, q_mean, jnp.mean(priority))


# ONE UPDATE: rollout into the buffer, then gradient steps on replayed batches


def update_step(
    networks: Networks, env: Environment, hp: QHyperparameters, state: QLearnerState
) -> Tuple[QLearnerState, TrainMetrics]:
    epsilon = optax.linear_schedule(hp.epsilon_start, hp.epsilon_end, hp.epsilon_decay_steps)(
        state.env_steps
    )
    state, traj, episodes = rollout(networks, env, hp, state, epsilon)
    state = state._replace(buffer_state=add_to_buffer(networks, state.buffer_state, traj))
    key, steps_key = jax.random.split(state.key)
    step_keys = jax.random.split(steps_key, hp.gradient_steps_per_update)
    state, (loss, q_mean, priority) = jax.lax.scan(
        functools.partial(gradient_step, networks, hp), state._replace(key=key), step_keys
    )
    info = QLossInfo(jnp.mean(loss), jnp.mean(q_mean), jnp.mean(priority), epsilon)
    metrics = summarise_episodes(
        episodes.is_terminal_step, episodes.episode_return, episodes.episode_length, info
    )
    return state, metrics


# SET-UP


def hyperparameters(cfg: DictConfig, plan: RunPlan) -> QHyperparameters:
    sys_cfg = cfg.system
    replicas = plan.num_replicas
    return QHyperparameters(
        gamma=float(sys_cfg.gamma),
        n_step=int(sys_cfg.n_step),
        rollout_length=plan.rollout_length,
        gradient_steps_per_update=int(sys_cfg.gradient_steps_per_update),
        batch_size=int(sys_cfg.batch_size) // replicas,
        tau=float(sys_cfg.tau),
        target_update_period=int(sys_cfg.target_update_period),
        epsilon_start=float(sys_cfg.epsilon_start),
        epsilon_end=float(sys_cfg.epsilon_end),
        epsilon_decay_steps=plan.steps_per_replica(float(sys_cfg.epsilon_decay_fraction)),
        evaluation_epsilon=float(sys_cfg.evaluation_epsilon),
        warmup_steps=int(sys_cfg.warmup_steps),
        prioritised=bool(sys_cfg.prioritised_replay),
        priority_exponent=float(sys_cfg.priority_exponent),
        importance_exponent_start=float(sys_cfg.importance_sampling_exponent),
        priority_floor=float(sys_cfg.priority_floor),
    )


def make_buffer(hp: QHyperparameters, cfg: DictConfig, plan: RunPlan) -> Any:
    return make_trajectory_buffer(
        plan,
        int(cfg.system.buffer_size),
        hp.batch_size,
        hp.n_step,
        hp.prioritised,
        hp.priority_exponent,
    )


def make_q_system(variant: QVariant) -> AnakinSystem:
    """The Anakin system of one family member: shared machinery around the variant's loss."""

    def build(ctx: BuildContext) -> SystemParts:
        cfg, env, plan = ctx.config, ctx.env, ctx.plan
        hp = hyperparameters(cfg, plan)
        network = make_q_network(cfg.network, env.spec)
        total_gradient_steps = plan.num_updates * hp.gradient_steps_per_update
        decay = bool(cfg.system.decay_learning_rate)
        networks = Networks(
            apply=network.apply,
            optimiser=clipped_optimiser(
                float(cfg.system.q_lr),
                float(cfg.system.max_grad_norm),
                eps=float(cfg.system.adam_eps),
                decay_steps=total_gradient_steps if decay else None,
            ),
            buffer=make_buffer(hp, cfg, plan),
            loss=variant.make_loss(cfg.system),
            total_gradient_steps=total_gradient_steps,
        )
        num_envs = plan.envs_per_replica

        def init_shared(
            params_key: PRNGKey, tuned: Mapping[str, jax.Array]
        ) -> Tuple[OnlineAndTarget, Any]:
            del tuned  # the replay family sweeps nothing yet (AnakinSystem.sweepable is empty)
            init_key, noise_key, example_key = jax.random.split(params_key, 3)
            _, example = env.reset(example_key)
            online = network.init({"params": init_key, "noise": noise_key}, example.observation)
            return OnlineAndTarget(online, online), networks.optimiser.init(online)

        def init_state(shared: Tuple[OnlineAndTarget, Any], replica_key: PRNGKey) -> QLearnerState:
            params, opt_state = shared
            # WARM-UP: uniformly random play (ε = 1) fills the buffer before the first step.
            keys = ReplicaKeys(*jax.random.split(replica_key, 3))
            start = warm_up(
                env,
                networks.buffer,
                hp.warmup_steps,
                num_envs,
                keys,
                jnp.zeros((num_envs,), jnp.int32),
                epsilon_greedy_act(networks, params.online, jnp.ones(())),
                keys_per_step=2,
            )
            return QLearnerState(
                params=params,
                opt_state=opt_state,
                buffer_state=start.buffer_state,
                key=keys.state,
                env_state=start.env_state,
                observation=start.observation,
                env_steps=jnp.zeros((), jnp.int32),
                gradient_steps=jnp.zeros((), jnp.int32),
            )

        return SystemParts(
            init_shared=init_shared,
            init_state=init_state,
            update_step=functools.partial(update_step, networks, env, hp),
            actor_params=lambda state: state.params.online,
            eval_act=q_eval_act(network.apply, hp.evaluation_epsilon),
        )

    return AnakinSystem(
        name=variant.name, action_kinds=("discrete",), build=build, validate=validate
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    sys_cfg = cfg.system
    if cfg.network.q_network.pre_torso.get("use_batch_norm", False):
        raise ConfigError(
            "network.q_network.pre_torso.use_batch_norm=True: BatchNorm statistics are "
            "updated only by ff_pqn; use LayerNorm (use_layer_norm=True) here"
        )
    validate_replay(cfg, plan)
    for key in ("gamma", "tau", "epsilon_start", "epsilon_end", "evaluation_epsilon"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    check_range(cfg, "system.epsilon_decay_fraction", 0.0, 1.0)
    check_range(cfg, "system.q_lr", 0.0, float("inf"))
    if float(sys_cfg.tau) == 0.0:
        check_range(cfg, "system.target_update_period", 1, float("inf"))


# A LOSS SHARED BY TWO MEMBERS


def categorical_loss(cfg: DictConfig) -> VariantLoss:
    """C51's and Rainbow's: cross-entropy to the projected distributional target.
    `system.double_q=True` picks the next action with the online network (as Rainbow does)."""
    double_q = bool(cfg.double_q)

    def loss(forward: QForward, batch: QBatch) -> q_losses.LossAndPriority:
        selector = forward.online_t if double_q else forward.target_t
        return q_losses.categorical_q_learning(
            forward.online_tm1.logits,
            forward.online_tm1.atoms,
            batch.action,
            batch.reward,
            batch.discount,
            forward.target_t.logits,
            selector.q_values,
        )

    return loss
