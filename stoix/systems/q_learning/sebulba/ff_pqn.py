"""PQN (Gallici et al., 2025) on the Sebulba architecture: host envs, actor threads, a learner.

Read top to bottom: what an actor does per step (`act`: ε-greedy), what the learner does per
rollout (`rollout_batch`: Q(λ) targets; `learn`: epochs × minibatches), then `build`. The
targets, the loss, the optimiser and the ε schedule are the PQN family's
(`stoix.systems.q_learning.pqn_base`); the runner's threads, queues, parameter source and
evaluator are shared by every Sebulba system.

    python stoix/systems/q_learning/sebulba/ff_pqn.py env=envpool/cartpole
"""

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from stoix.base_types import Observation, OptState, Params, PRNGKey
from stoix.networks.base import make_q_network
from stoix.parallel import pmean_replicas
from stoix.runners.sebulba import run_sebulba
from stoix.system_api import (
    Rollout,
    SebulbaBuildContext,
    SebulbaLayout,
    SebulbaParts,
    SebulbaSystem,
)
from stoix.systems.q_learning.pqn_base import (
    Minibatch,
    Networks,
    PQNHyperparameters,
    PQNLossInfo,
    epsilon_schedule,
    make_optimiser,
    minibatch_step,
    pqn_hyperparameters,
    pqn_targets,
    q_loss,
    validate_pqn,
)
from stoix.systems.q_learning.q_acting import epsilon_greedy, q_eval_act
from stoix.utils.config import RunPlan, check_divides
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import masked_mean, run_epochs


class SebulbaPQNState(NamedTuple):
    params: Params  # the network variables: "params", and "batch_stats" with BatchNorm
    opt_state: OptState
    key: PRNGKey
    # () int32: env steps one actor thread has taken, as counted by the updates so far. Anakin
    # PQN counts per replica; an actor thread is Sebulba's replica, so ε decays on its schedule.
    actor_steps: jax.Array
    epsilon: jax.Array  # () the exploration rate of the actors' next rollouts


class PQNActorParams(NamedTuple):
    """What the actors receive after each update. ε travels with the parameters because the
    actors see nothing of the learner state but this."""

    params: Params
    epsilon: jax.Array  # ()


class ActorExtras(NamedTuple):
    action: jax.Array  # [N] int32, as taken


# ACTING (on an actor device, once per env step)


def act(
    networks: Networks, actor_params: PQNActorParams, observation: Observation, key: PRNGKey
) -> Tuple[jax.Array, ActorExtras, PRNGKey]:
    key, act_key = jax.random.split(key)
    # The Q-network puts masked actions at its lowest value, so the greedy choice respects
    # `action_mask`; epsilon_greedy's random choice draws from the valid actions only.
    q = networks.apply(actor_params.params, observation).q_values
    action = epsilon_greedy(act_key, q, observation.action_mask, actor_params.epsilon)
    return action, ActorExtras(action), key


# LEARNING (on each learner device's share of the envs, once per rollout)


def rollout_batch(
    networks: Networks, hp: PQNHyperparameters, params: Params, rollout: Rollout
) -> Minibatch:
    """The rollout as training rows [T, N]: observations, actions, Q(λ) targets and the mask.

    Step t bootstraps from `observation[t + 1]`: after a terminated step not at all (discount
    0); after a truncated step from the episode's final observation, which host envs keep, with
    the λ-trace cut there as at a termination. The reset step that follows either is masked
    out; the cut keeps its target from leaking into the step before it.
    """
    next_observation = jax.tree.map(lambda x: x[1:], rollout.observation)
    targets = pqn_targets(
        networks,
        hp,
        params,
        rollout.reward,
        1.0 - rollout.terminated.astype(jnp.float32),
        rollout.terminated | rollout.truncated,
        next_observation,
        hp.q_lambda,
    )
    observation = jax.tree.map(lambda x: x[:-1], rollout.observation)
    return Minibatch(
        observation, rollout.extras.action, jax.lax.stop_gradient(targets), mask=rollout.valid
    )


def learn(
    networks: Networks,
    hp: PQNHyperparameters,
    actor_steps_per_update: int,
    state: SebulbaPQNState,
    rollout: Rollout,
) -> Tuple[SebulbaPQNState, PQNLossInfo]:
    data = rollout_batch(networks, hp, state.params, rollout)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
    step = functools.partial(minibatch_step, q_loss, networks)
    (params, opt_state), key, (loss, q_mean) = run_epochs(
        step, (state.params, state.opt_state), flat, state.key, hp.epochs, hp.num_minibatches
    )
    actor_steps = state.actor_steps + actor_steps_per_update
    # Averaged over the learner devices: the runner reads one device's copy of the info.
    info = pmean_replicas(
        PQNLossInfo(
            loss=jnp.mean(loss),
            q_mean=jnp.mean(q_mean),
            target_mean=masked_mean(data.target, data.mask),
            # The rate the actors were given; with policy lag some acted with an earlier one.
            epsilon=state.epsilon,
        )
    )
    new_state = SebulbaPQNState(
        params, opt_state, key, actor_steps, epsilon_schedule(hp)(actor_steps)
    )
    return new_state, info


# SET-UP


def build(ctx: SebulbaBuildContext) -> SebulbaParts:
    cfg, plan = ctx.config, ctx.plan
    hp = pqn_hyperparameters(cfg.system, plan)
    network = make_q_network(cfg.network, ctx.spec)
    networks = Networks(apply=network.apply, optimiser=make_optimiser(cfg.system, plan, hp))
    example = jax.tree.map(lambda x: x[0], ctx.example_observation)

    def init_learner(params_key: PRNGKey) -> SebulbaPQNState:
        init_key, state_key = jax.random.split(params_key)
        params = dict(network.init(init_key, example))
        actor_steps = jnp.zeros((), jnp.int32)
        return SebulbaPQNState(
            params,
            networks.optimiser.init(params["params"]),
            state_key,
            actor_steps,
            jnp.asarray(epsilon_schedule(hp)(actor_steps), jnp.float32),
        )

    eval_act = q_eval_act(network.apply, hp.evaluation_epsilon)
    return SebulbaParts(
        init_learner=init_learner,
        actor_params=lambda state: PQNActorParams(state.params, state.epsilon),
        act=functools.partial(act, networks),
        learn=functools.partial(learn, networks, hp, plan.rollout_length * plan.envs_per_replica),
        eval_act=lambda greedy: (
            lambda actor_params, obs, key: eval_act(greedy)(actor_params.params, obs, key)
        ),
    )


def validate(cfg: DictConfig, plan: RunPlan, layout: SebulbaLayout) -> None:
    validate_pqn(cfg)
    envs_per_learner = plan.total_num_envs // len(layout.learner_devices)
    check_divides(
        "arch.total_num_envs / learner devices × system.rollout_length",
        envs_per_learner * plan.rollout_length,
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )


SYSTEM = SebulbaSystem(name="ff_pqn", action_kinds=("discrete",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PQN on Sebulba as configured; returns the last evaluation's mean episode return."""
    return run_sebulba(cfg, SYSTEM)


@hydra_main("ff_pqn", arch_dir="default/sebulba")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
