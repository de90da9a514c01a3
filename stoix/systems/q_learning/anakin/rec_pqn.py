"""Recurrent PQN on Anakin: PQN (see `pqn_base`) with a GRU or LSTM Q-network.

What changes from ff_pqn: the learner keeps each env's hidden state across rollouts; every step
records whether its observation opens an episode, and the network zeroes the hidden state
there; learning replays whole env sequences from the hidden state the rollout started with, so
minibatches split the envs, not the time steps. The hyperparameters, the optimiser, ε, the
swept initial state and the range checks are the family's. Read top to bottom: the rollout,
the targets, the minibatch step, the update, `build`.

The rollout is the shared `env_rollout` with the actor's memory (hidden state and the
new-episode flag) as its carry; the flag is the env step's `timestep.last()` (not the next
observation's `step_count`: envpool's episodic-life games end an episode on a lost life while
the game's step count goes on), set after each step. The recurrent targets and the
env-sequence minibatches are why this file is longer than ~300 lines.
"""

import functools
from typing import Any, NamedTuple, Tuple

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
from stoix.errors import ConfigError
from stoix.evaluator.anakin import RecurrentEvalAct
from stoix.networks.recurrent import Hidden, make_recurrent_q_network, unroll
from stoix.parallel import pmean_replicas
from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem, BuildContext, SystemParts
from stoix.systems.q_learning.pqn_base import (
    SWEEPABLE,
    PQNHyperparameters,
    PQNLossInfo,
    epsilon_schedule,
    make_init_shared,
    make_optimiser,
    pqn_hyperparameters,
    validate_pqn,
)
from stoix.systems.q_learning.q_acting import epsilon_greedy
from stoix.utils.config import RunPlan, check_divides
from stoix.utils.entry import hydra_main
from stoix.utils.multistep import q_lambda_targets
from stoix.utils.rollout import RolloutEnd, env_rollout


class RecPQNLearnerState(NamedTuple):
    """One replica's learner state; leaves gain [D, S, B] axes in the runner."""

    params: Params
    opt_state: OptState
    key: PRNGKey
    env_state: Any  # [N]
    observation: Observation  # [N] what the next rollout acts on first
    new_episode: jax.Array  # [N] bool: `observation` opens an episode (hidden is zeroed)
    hidden: Hidden  # [N, ...] hidden state before `observation`
    env_steps: jax.Array  # () int32, env steps taken by this replica (drives ε)
    q_lambda: jax.Array  # () this run's λ (sweepable)


class RecPQNTransition(NamedTuple):
    """One rollout step of N envs (time-major [T, N] after the rollout scan)."""

    observation: Observation
    new_episode: jax.Array  # [N] bool: the network resets its hidden state before this step
    action: jax.Array  # [N] int32
    reward: jax.Array  # [N]
    discount: jax.Array  # [N] 0 on termination
    episode_end: jax.Array  # [N] terminated or truncated: Q(λ) traces stop here
    next_observation: Observation  # true next observation (the final one at episode ends)
    # [N, ...] hidden state after this step: what the next observation of the same episode sees
    hidden: Hidden
    episode_return: jax.Array  # [N] valid where episode_end
    episode_length: jax.Array  # [N]


class Networks(NamedTuple):
    apply: Any  # (params, hidden, observation, reset) -> (hidden, QValues)
    optimiser: optax.GradientTransformation


# ROLLOUT


class ActorMemory(NamedTuple):
    """What the recurrent actor carries from step to step."""

    new_episode: jax.Array  # [N] bool: the next observation opens an episode
    hidden: Hidden  # [N, ...]


def rollout(
    networks: Networks,
    env: Environment,
    hp: PQNHyperparameters,
    state: RecPQNLearnerState,
    epsilon: jax.Array,
) -> Tuple[RecPQNLearnerState, RecPQNTransition]:
    params = state.params

    def act(
        memory: ActorMemory, observation: Observation, act_key: PRNGKey
    ) -> Tuple[ActorMemory, jax.Array, Tuple[ActorMemory, jax.Array]]:
        hidden, q = networks.apply(params, memory.hidden, observation, memory.new_episode)
        action = epsilon_greedy(act_key, q.q_values, observation.action_mask, epsilon)
        # Kept: the flag this step acted with, the hidden state after it, and the action.
        kept = (ActorMemory(memory.new_episode, hidden), action)
        return memory._replace(hidden=hidden), action, kept

    def record(
        observation: Observation, kept: Tuple[ActorMemory, jax.Array], timestep: TimeStep
    ) -> RecPQNTransition:
        memory, action = kept
        return RecPQNTransition(
            observation=observation,
            new_episode=memory.new_episode,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
            hidden=memory.hidden,
            episode_return=timestep.metrics.episode_return,
            episode_length=timestep.metrics.episode_length,
        )

    end, traj = env_rollout(
        env,
        act,
        record,
        RolloutEnd(
            state.key,
            state.env_state,
            state.observation,
            ActorMemory(state.new_episode, state.hidden),
        ),
        hp.rollout_length,
        # The step's episode end zeroes the hidden state before the next observation.
        after_step=lambda memory, timestep: memory._replace(new_episode=timestep.last()),
    )
    return state._replace(
        key=end.key,
        env_state=end.env_state,
        observation=end.observation,
        new_episode=end.actor_carry.new_episode,
        hidden=end.actor_carry.hidden,
        env_steps=state.env_steps + hp.rollout_length * traj.action.shape[1],
    ), traj


# TARGETS


def recurrent_q_lambda_targets(
    networks: Networks,
    params: Params,
    traj: RecPQNTransition,
    hp: PQNHyperparameters,
    q_lambda: jax.Array,
) -> jax.Array:
    """Q(λ) targets [T, N] of a rollout, bootstrapped from each step's true next observation.

    The next observation's value is the network's one step from the hidden state that followed
    step t (recorded by the rollout, whose parameters these are), without a reset: at an
    episode's last step that is the final observation seen with the episode's memory (the
    auto-reset observation that follows in the rollout is not used).
    """
    no_reset = jnp.zeros_like(traj.new_episode)
    _, next_q = networks.apply(params, traj.hidden, traj.next_observation, no_reset)
    return q_lambda_targets(
        hp.reward_scale * traj.reward,
        hp.gamma * traj.discount,
        jnp.max(next_q.q_values, axis=-1),
        traj.episode_end,
        q_lambda,
    )


# THE MINIBATCH STEP: a slice of the envs, whole sequences


class SequenceMinibatch(NamedTuple):
    hidden_start: Hidden  # [n, ...] hidden state before the rollout's first step
    observation: Observation  # [T, n]
    new_episode: jax.Array  # [T, n]
    action: jax.Array  # [T, n]
    target: jax.Array  # [T, n]


def q_loss(params: Params, networks: Networks, batch: SequenceMinibatch):
    _, (q_values, _) = unroll(
        networks.apply, params, batch.hidden_start, batch.observation, batch.new_episode
    )
    q_sa = jnp.take_along_axis(q_values, batch.action[..., None], axis=-1)[..., 0]
    return 0.5 * jnp.mean(jnp.square(q_sa - batch.target)), jnp.mean(q_sa)


def minibatch_step(networks: Networks, carry: Tuple[Params, OptState], batch: SequenceMinibatch):
    params, opt_state = carry
    (loss, q_mean), grads = jax.value_and_grad(q_loss, has_aux=True)(params, networks, batch)
    grads = pmean_replicas(grads)
    updates, opt_state = networks.optimiser.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (loss, q_mean)


# ONE UPDATE: rollout, Q(λ) targets, epochs × minibatches of env sequences


def update_step(
    networks: Networks, env: Environment, hp: PQNHyperparameters, state: RecPQNLearnerState
) -> Tuple[RecPQNLearnerState, TrainMetrics]:
    epsilon = epsilon_schedule(hp)(state.env_steps)
    hidden_start = state.hidden
    state, traj = rollout(networks, env, hp, state, epsilon)
    targets = jax.lax.stop_gradient(
        recurrent_q_lambda_targets(networks, state.params, traj, hp, state.q_lambda)
    )
    data = SequenceMinibatch(hidden_start, traj.observation, traj.new_episode, traj.action, targets)
    num_envs = traj.action.shape[1]
    step = functools.partial(minibatch_step, networks)

    def split_envs(x: jax.Array, order: jax.Array, env_axis: int) -> jax.Array:
        x = jnp.take(x, order, axis=env_axis)
        shape = x.shape[:env_axis] + (hp.num_minibatches, -1) + x.shape[env_axis + 1 :]
        return jnp.moveaxis(x.reshape(shape), env_axis, 0)

    def epoch(carry, _):
        params, opt_state, key = carry
        key, shuffle_key = jax.random.split(key)
        order = jax.random.permutation(shuffle_key, num_envs)
        minibatches = SequenceMinibatch(
            hidden_start=jax.tree.map(lambda x: split_envs(x, order, 0), data.hidden_start),
            observation=jax.tree.map(lambda x: split_envs(x, order, 1), data.observation),
            new_episode=split_envs(data.new_episode, order, 1),
            action=split_envs(data.action, order, 1),
            target=split_envs(data.target, order, 1),
        )
        (params, opt_state), info = jax.lax.scan(step, (params, opt_state), minibatches)
        return (params, opt_state, key), info

    (params, opt_state, key), (loss, q_mean) = jax.lax.scan(
        epoch, (state.params, state.opt_state, state.key), None, length=hp.epochs
    )
    info = PQNLossInfo(jnp.mean(loss), jnp.mean(q_mean), jnp.mean(targets), epsilon)
    metrics = summarise_episodes(traj.episode_end, traj.episode_return, traj.episode_length, info)
    return state._replace(params=params, opt_state=opt_state, key=key), metrics


# SET-UP


def build(ctx: BuildContext) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    hp = pqn_hyperparameters(cfg.system, plan)
    network = make_recurrent_q_network(cfg.network, env.spec)
    networks = Networks(apply=network.apply, optimiser=make_optimiser(cfg.system, plan, hp))
    num_envs = plan.envs_per_replica

    def init_variables(key: PRNGKey, observation: Observation) -> Tuple[Params, Params]:
        observation = jax.tree.map(lambda x: x[None], observation)
        params = network.init(key, network.initial_hidden((1,)), observation, jnp.ones((1,), bool))
        # The optimiser steps all of them: a recurrent network has no BatchNorm statistics.
        return params, params

    def init_state(
        shared: Tuple[Params, OptState, jax.Array], replica_key: PRNGKey
    ) -> RecPQNLearnerState:
        params, opt_state, q_lambda = shared
        env_key, state_key = jax.random.split(replica_key)
        env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
        return RecPQNLearnerState(
            params=params,
            opt_state=opt_state,
            key=state_key,
            env_state=env_state,
            observation=timestep.observation,
            new_episode=jnp.ones((num_envs,), bool),
            hidden=network.initial_hidden((num_envs,)),
            env_steps=jnp.zeros((), jnp.int32),
            q_lambda=q_lambda,
        )

    def eval_act(greedy: bool) -> RecurrentEvalAct:
        epsilon = jnp.asarray(0.0 if greedy else hp.evaluation_epsilon)

        def act(params, hidden, observation, reset, key):
            hidden, q = network.apply(params, hidden, observation, reset)
            return hidden, epsilon_greedy(key, q.q_values, observation.action_mask, epsilon)

        return RecurrentEvalAct(initial_hidden=lambda num: network.initial_hidden((num,)), act=act)

    return SystemParts(
        init_shared=make_init_shared(env, networks.optimiser, hp, init_variables),
        init_state=init_state,
        update_step=functools.partial(update_step, networks, env, hp),
        actor_params=lambda state: state.params,
        eval_act=eval_act,
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_pqn(cfg)
    if "core" not in cfg.network.q_network:
        raise ConfigError(
            "rec_pqn needs a recurrent network (network.q_network.core); "
            "use network=rnn_pqn or network=lstm_pqn"
        )
    if cfg.network.q_network.pre_torso.get("use_batch_norm", False):
        raise ConfigError(
            "network.q_network.pre_torso.use_batch_norm=True: rec_pqn supports LayerNorm only"
        )
    # Minibatches hold whole env sequences, so they split the envs, not env × time.
    check_divides(
        "arch.total_num_envs / (devices × arch.update_batch_size)",
        plan.envs_per_replica,
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )


SYSTEM = AnakinSystem(
    name="rec_pqn",
    action_kinds=("discrete",),
    build=build,
    validate=validate,
    sweepable=SWEEPABLE,
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains recurrent PQN as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("rec_pqn")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
