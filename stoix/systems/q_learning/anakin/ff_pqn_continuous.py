"""Continuous PQN: PQN's recipe with a DDPG-style deterministic actor, on Anakin.

As `ff_pqn`: no replay buffer and no target networks; many vectorised envs, LayerNorm critics
(`network=mlp_pqn_continuous`) and Q(λ) targets computed once per rollout. What continuous
actions change: a tanh actor explores with decaying Gaussian noise, two critics Q1, Q2 give the
bootstrap value min(Q1, Q2)(s', π(s')), and the actor ascends Q1(s, π(s)). Observations are
normalised with running statistics shared by the replicas of a seed, as in `ff_ppo_continuous`.

Read top to bottom: the rollout, the targets, the minibatch step, the update, `build`.

Longer than ~300 lines because it is a whole actor-critic of its own: its types, twin-critic
targets, two losses and minibatch step have no other user, so they stay here rather than in
`pqn_base`, whose discrete Q-network machinery it does not use. The rollout loop
(`env_rollout`), the observation normaliser (`observe`), the optimiser (`clipped_optimiser`) and
the minibatch check (`pqn_base.check_minibatches`) are the shared ones.
"""

import functools
from typing import Any, Callable, NamedTuple, Tuple, get_args

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    ActorCriticOptStates,
    ActorCriticParams,
    Environment,
    Observation,
    Params,
    PRNGKey,
    TimeStep,
    TrainMetrics,
    summarise_episodes,
)
from stoix.errors import ConfigError
from stoix.networks.deterministic import make_deterministic_actor, make_state_action_critic
from stoix.parallel import pmean_replicas
from stoix.runners.anakin import run_anakin
from stoix.system_api import AnakinSystem, BuildContext, SystemParts
from stoix.systems.q_learning.pqn_base import check_minibatches
from stoix.utils.config import RunPlan, check_range
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import run_epochs
from stoix.utils.multistep import q_lambda_targets
from stoix.utils.optimisers import Algorithm, clipped_optimiser
from stoix.utils.rollout import RolloutEnd, env_rollout
from stoix.utils.running_statistics import (
    RunningStatistics,
    init_statistics,
    observe,
    update_statistics,
)


class ContinuousPQNHyperparameters(NamedTuple):
    gamma: float
    q_lambda: float
    rollout_length: int
    epochs: int
    num_minibatches: int
    exploration_noise_start: float  # Gaussian noise std, as a fraction of the half action range
    exploration_noise_end: float
    exploration_noise_decay_steps: int  # env steps per replica over which the std decays (≥ 1)
    reward_scale: float
    normalise_observations: bool


class ContinuousPQNLearnerState(NamedTuple):
    """One replica's learner state; leaves gain [D, S, B] axes in the runner."""

    # critic_params: both critics' parameters stacked on a leading axis of 2 (Q1, Q2), so one
    # vmapped apply evaluates both and one optimiser (elementwise, so as good as two) steps both.
    params: ActorCriticParams
    opt_states: ActorCriticOptStates
    key: PRNGKey
    env_state: Any  # [N]
    observation: Observation  # [N] what the next rollout acts on first
    obs_stats: RunningStatistics
    env_steps: jax.Array  # () int32, env steps taken by this replica (drives the noise decay)


class ContinuousPQNTransition(NamedTuple):
    """One rollout step of N envs (time-major [T, N] after the rollout scan)."""

    observation: Observation
    action: jax.Array  # [N, A] the action the env received (noisy, clipped to the bounds)
    reward: jax.Array  # [N]
    discount: jax.Array  # [N] 0 on termination, 1 otherwise (truncation bootstraps)
    episode_end: jax.Array  # [N] terminated or truncated: Q(λ) traces stop here
    next_observation: Observation  # true next observation (the final one at episode ends)
    episode_return: jax.Array  # [N] valid where episode_end
    episode_length: jax.Array  # [N]


class ContinuousPQNLossInfo(NamedTuple):
    critic_loss: jax.Array  # sum of both critics' mean squared errors
    actor_loss: jax.Array  # −Q1(s, π(s))
    q_mean: jax.Array  # mean Q1(s_t, a_t)
    target_mean: jax.Array  # mean Q(λ) target
    exploration_noise: jax.Array  # noise std (fraction of the half range) of the rollout


class Networks(NamedTuple):
    actor_apply: Callable[[Params, Observation], jax.Array]
    critic_apply: Callable[[Params, Observation, jax.Array], jax.Array]  # ONE critic's params
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    action_low: jax.Array  # [A]
    action_high: jax.Array  # [A]


def twin_q(networks: Networks, critic_params: Params, obs: Observation, action: jax.Array):
    """[2, ...] Q1 and Q2 of (obs, action) from the stacked critic parameters."""
    return jax.vmap(networks.critic_apply, in_axes=(0, None, None))(critic_params, obs, action)


def first_critic(critic_params: Params) -> Params:
    return jax.tree.map(lambda x: x[0], critic_params)


def noisy_action(
    networks: Networks, key: PRNGKey, action: jax.Array, noise_std: jax.Array
) -> jax.Array:
    """Adds Gaussian noise scaled to the action range, then clips to the env's bounds."""
    half_range = (networks.action_high - networks.action_low) / 2.0
    noise = noise_std * half_range * jax.random.normal(key, action.shape)
    return jnp.clip(action + noise, networks.action_low, networks.action_high)


# ROLLOUT


def rollout(
    networks: Networks,
    env: Environment,
    hp: ContinuousPQNHyperparameters,
    state: ContinuousPQNLearnerState,
    noise_std: jax.Array,
) -> Tuple[ContinuousPQNLearnerState, ContinuousPQNTransition]:
    actor_params, obs_stats = state.params.actor_params, state.obs_stats

    def act(carry: Tuple[()], observation: Observation, key: PRNGKey):
        seen = observe(obs_stats, observation, hp.normalise_observations)
        action = noisy_action(networks, key, networks.actor_apply(actor_params, seen), noise_std)
        return carry, action, action

    def record(
        observation: Observation, action: jax.Array, timestep: TimeStep
    ) -> ContinuousPQNTransition:
        return ContinuousPQNTransition(
            observation=observation,
            action=action,
            reward=timestep.reward,
            discount=timestep.discount,
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
            episode_return=timestep.metrics.episode_return,
            episode_length=timestep.metrics.episode_length,
        )

    start = RolloutEnd(state.key, state.env_state, state.observation, ())
    end, traj = env_rollout(env, act, record, start, hp.rollout_length)
    steps = state.env_steps + hp.rollout_length * traj.reward.shape[1]
    state = state._replace(
        key=end.key, env_state=end.env_state, observation=end.observation, env_steps=steps
    )
    return state, traj


# TARGETS


def critic_targets(
    networks: Networks,
    hp: ContinuousPQNHyperparameters,
    params: ActorCriticParams,
    traj: ContinuousPQNTransition,
) -> jax.Array:
    """Q(λ) targets [T, N] bootstrapped from min(Q1, Q2)(s', π(s')) at each TRUE next s'.

    `traj` holds the observations as the networks see them (already normalised). The discount
    is γ·discount, so a termination stops the bootstrap and a truncation keeps it; the trace is
    cut at every episode end so it never runs into the next episode.
    """
    next_action = networks.actor_apply(params.actor_params, traj.next_observation)
    next_q = twin_q(networks, params.critic_params, traj.next_observation, next_action)
    return q_lambda_targets(
        hp.reward_scale * traj.reward,
        hp.gamma * traj.discount,
        jnp.min(next_q, axis=0),
        traj.episode_end,
        hp.q_lambda,
    )


# THE MINIBATCH STEP


class Minibatch(NamedTuple):
    observation: Observation  # as the networks see it
    action: jax.Array  # [B, A]
    target: jax.Array  # [B]


def critic_loss(
    critic_params: Params, networks: Networks, batch: Minibatch
) -> Tuple[jax.Array, jax.Array]:
    q = twin_q(networks, critic_params, batch.observation, batch.action)  # [2, B]
    loss = jnp.sum(jnp.mean(jnp.square(q - batch.target[None]), axis=-1))
    return loss, jnp.mean(q[0])


def actor_loss(
    actor_params: Params, critic_params: Params, networks: Networks, batch: Minibatch
) -> jax.Array:
    action = networks.actor_apply(actor_params, batch.observation)
    return -jnp.mean(networks.critic_apply(first_critic(critic_params), batch.observation, action))


def minibatch_step(
    networks: Networks,
    carry: Tuple[ActorCriticParams, ActorCriticOptStates],
    batch: Minibatch,
) -> Tuple[Tuple[ActorCriticParams, ActorCriticOptStates], Tuple[jax.Array, ...]]:
    params, opt_states = carry
    (c_loss, q_mean), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(
        params.critic_params, networks, batch
    )
    # The actor ascends the critic as it was before this step, so both gradients come from the
    # same parameters and are averaged over replicas in one collective.
    a_loss, actor_grads = jax.value_and_grad(actor_loss)(
        params.actor_params, params.critic_params, networks, batch
    )
    actor_grads, critic_grads = pmean_replicas((actor_grads, critic_grads))
    actor_updates, actor_opt = networks.actor_optimiser.update(
        actor_grads, opt_states.actor_opt_state, params.actor_params
    )
    critic_updates, critic_opt = networks.critic_optimiser.update(
        critic_grads, opt_states.critic_opt_state, params.critic_params
    )
    params = ActorCriticParams(
        optax.apply_updates(params.actor_params, actor_updates),
        optax.apply_updates(params.critic_params, critic_updates),
    )
    return (params, ActorCriticOptStates(actor_opt, critic_opt)), (c_loss, a_loss, q_mean)


# ONE UPDATE: rollout, Q(λ) targets, epochs × minibatches


def update_step(
    networks: Networks,
    env: Environment,
    hp: ContinuousPQNHyperparameters,
    state: ContinuousPQNLearnerState,
) -> Tuple[ContinuousPQNLearnerState, TrainMetrics]:
    noise_std = optax.linear_schedule(
        hp.exploration_noise_start, hp.exploration_noise_end, hp.exploration_noise_decay_steps
    )(state.env_steps)
    state, traj = rollout(networks, env, hp, state, noise_std)
    # Learning sees observations normalised with the statistics the rollout acted on; the
    # refreshed statistics take effect from the next update, as in ff_ppo.
    seen = traj._replace(
        observation=observe(state.obs_stats, traj.observation, hp.normalise_observations),
        next_observation=observe(state.obs_stats, traj.next_observation, hp.normalise_observations),
    )
    obs_stats = state.obs_stats
    if hp.normalise_observations:
        obs_stats = update_statistics(obs_stats, traj.observation.agent_view, pmean_replicas)
    targets = jax.lax.stop_gradient(critic_targets(networks, hp, state.params, seen))
    data = Minibatch(seen.observation, seen.action, targets)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
    step = functools.partial(minibatch_step, networks)
    (params, opt_states), key, (c_loss, a_loss, q_mean) = run_epochs(
        step, (state.params, state.opt_states), flat, state.key, hp.epochs, hp.num_minibatches
    )
    info = ContinuousPQNLossInfo(
        jnp.mean(c_loss), jnp.mean(a_loss), jnp.mean(q_mean), jnp.mean(targets), noise_std
    )
    metrics = summarise_episodes(traj.episode_end, traj.episode_return, traj.episode_length, info)
    new_state = state._replace(params=params, opt_states=opt_states, key=key, obs_stats=obs_stats)
    return new_state, metrics


# SET-UP


def build(ctx: BuildContext) -> SystemParts:
    cfg, env, plan = ctx.config, ctx.env, ctx.plan
    sys_cfg = cfg.system
    hp = ContinuousPQNHyperparameters(
        gamma=float(sys_cfg.gamma),
        q_lambda=float(sys_cfg.q_lambda),
        rollout_length=plan.rollout_length,
        epochs=int(sys_cfg.epochs),
        num_minibatches=int(sys_cfg.num_minibatches),
        exploration_noise_start=float(sys_cfg.exploration_noise_start),
        exploration_noise_end=float(sys_cfg.exploration_noise_end),
        exploration_noise_decay_steps=plan.steps_per_replica(
            float(sys_cfg.exploration_noise_decay_fraction)
        ),
        reward_scale=float(sys_cfg.reward_scale),
        normalise_observations=bool(sys_cfg.normalise_observations),
    )
    actor = make_deterministic_actor(cfg.network, env.spec)
    critic = make_state_action_critic(cfg.network)
    gradient_steps = plan.num_updates * hp.epochs * hp.num_minibatches
    decay_steps = gradient_steps if bool(sys_cfg.decay_learning_rate) else None
    name, clip = str(sys_cfg.optimiser), float(sys_cfg.max_grad_norm)
    networks = Networks(
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        actor_optimiser=clipped_optimiser(
            float(sys_cfg.actor_lr), clip, name, decay_steps=decay_steps
        ),
        critic_optimiser=clipped_optimiser(
            float(sys_cfg.critic_lr), clip, name, decay_steps=decay_steps
        ),
        action_low=jnp.asarray(env.spec.action_minimum, jnp.float32),
        action_high=jnp.asarray(env.spec.action_maximum, jnp.float32),
    )
    num_envs = plan.envs_per_replica

    def init_shared(params_key: PRNGKey, tuned: Any) -> Tuple[ActorCriticParams, Any]:
        del tuned  # nothing is sweepable (AnakinSystem.sweepable is empty)
        actor_key, critic_key, example_key = jax.random.split(params_key, 3)
        _, example = env.reset(example_key)
        actor_params = actor.init(actor_key, example.observation)
        example_action = actor.apply(actor_params, example.observation)
        critic_params = jax.vmap(critic.init, in_axes=(0, None, None))(
            jax.random.split(critic_key), example.observation, example_action
        )
        params = ActorCriticParams(actor_params, critic_params)
        opt_states = ActorCriticOptStates(
            networks.actor_optimiser.init(actor_params),
            networks.critic_optimiser.init(critic_params),
        )
        return params, opt_states

    def init_state(shared: Tuple[ActorCriticParams, Any], replica_key: PRNGKey):
        params, opt_states = shared
        env_key, state_key = jax.random.split(replica_key)
        env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
        return ContinuousPQNLearnerState(
            params=params,
            opt_states=opt_states,
            key=state_key,
            env_state=env_state,
            observation=timestep.observation,
            obs_stats=init_statistics(env.spec.observation_shape),
            env_steps=jnp.zeros((), jnp.int32),
        )

    def eval_act(greedy: bool):
        noise_std = jnp.asarray(0.0 if greedy else hp.exploration_noise_end, jnp.float32)

        def act(
            policy: Tuple[Params, RunningStatistics], observation: Observation, key: PRNGKey
        ) -> jax.Array:
            params, obs_stats = policy
            action = actor.apply(params, observe(obs_stats, observation, hp.normalise_observations))
            return noisy_action(networks, key, action, noise_std)

        return act

    return SystemParts(
        init_shared=init_shared,
        init_state=init_state,
        update_step=functools.partial(update_step, networks, env, hp),
        # The evaluator gets the statistics too, so it normalises exactly as training does.
        actor_params=lambda state: (state.params.actor_params, state.obs_stats),
        eval_act=eval_act,
    )


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    check_minibatches(cfg, plan)
    for key in ("gamma", "q_lambda", "exploration_noise_decay_fraction"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("exploration_noise_start", "exploration_noise_end", "actor_lr", "critic_lr"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    for key in ("max_grad_norm", "reward_scale"):
        if check_range(cfg, f"system.{key}", 0.0, float("inf")) == 0.0:
            raise ConfigError(f"system.{key}=0 must be positive")
    check_range(cfg, "system.epochs", 1, float("inf"))
    if str(cfg.system.optimiser) not in get_args(Algorithm):
        raise ConfigError(
            f"system.optimiser={cfg.system.optimiser} must be one of "
            f"{', '.join(get_args(Algorithm))}"
        )


SYSTEM = AnakinSystem(
    name="ff_pqn_continuous",
    action_kinds=("continuous",),
    build=build,
    validate=validate,
)


def run_experiment(cfg: DictConfig) -> float:
    """Trains continuous PQN as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_pqn_continuous")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
