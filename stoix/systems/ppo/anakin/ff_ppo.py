"""PPO (Schulman et al., 2017) on the Anakin architecture, for discrete actions, and the
on-policy actor-critic machinery its relatives share.

Read top to bottom: the rollout, the minibatch step with its losses, the update, then
`build`, which hands these to the shared runner. `ff_ppo_continuous.py` reuses all of it; so do
DPO and REINFORCE, which differ only in their `PolicyLoss` (see `make_build`), and V-MPO, which
reuses `collect` (rollout → observation statistics → GAE) and the set-up helpers.
"""

import functools
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Tuple

import jax
import jax.numpy as jnp
import optax
from omegaconf import DictConfig

from stoix.base_types import (
    ActorCriticOptStates,
    ActorCriticParams,
    EnvSpec,
    Observation,
    Params,
    PRNGKey,
    TrainMetrics,
    summarise_episodes,
)
from stoix.networks.base import make_actor, make_critic
from stoix.networks.distributions import greedy_action, policy_entropy
from stoix.systems.ppo.ppo_losses import (
    clipped_policy_loss,
    clipped_value_loss,
    masked_advantage,
)
from stoix.systems.ppo.ppo_types import PPOLearnerState, PPOLossInfo, PPOTransition
from stoix.utils.config import RunPlan, check_divides, check_range
from stoix.utils.entry import hydra_main
from stoix.utils.minibatches import masked_mean, run_epochs
from stoix.utils.multistep import generalized_advantage_estimation
from stoix.utils.runner import AnakinSystem, BuildContext, SystemParts, pmean_replicas, run_anakin
from stoix.utils.running_statistics import (
    RunningStatistics,
    init_statistics,
    normalise,
    update_statistics,
)

ApplyFn = Callable[..., Any]
# (log π(a|s) [B], log π_old(a|s) [B], advantages [B]) -> (loss, approx KL, clip fraction): the
# policy-gradient surrogate, the one part in which PPO, DPO and REINFORCE differ.
PolicyLoss = Callable[[jax.Array, jax.Array, jax.Array], Tuple[jax.Array, jax.Array, jax.Array]]


class PPOHyperparameters(NamedTuple):
    gamma: float
    gae_lambda: float
    value_clip_epsilon: float | None  # None: plain squared error, no clip
    entropy_coefficient: float
    value_coefficient: float
    standardise_advantages: bool
    epochs: int
    num_minibatches: int
    rollout_length: int
    normalise_observations: bool


class MinibatchData(NamedTuple):
    observation: Observation
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array
    # Rows that count in the losses; None: all of them. Sebulba masks the env-reset steps.
    mask: jax.Array | None = None


class RolloutSettings(Protocol):
    """What `rollout` and `collect` read from a system's hyperparameters."""

    @property
    def gamma(self) -> float: ...

    @property
    def gae_lambda(self) -> float: ...

    @property
    def rollout_length(self) -> int: ...

    @property
    def normalise_observations(self) -> bool: ...


class Networks(NamedTuple):
    actor_apply: ApplyFn
    critic_apply: ApplyFn
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    action_low: jax.Array | None  # continuous actions are clipped to these bounds for the env
    action_high: jax.Array | None


def to_env_action(networks: Networks, action: jax.Array) -> jax.Array:
    if networks.action_low is None:
        return action
    return jnp.clip(action, networks.action_low, networks.action_high)


def observe(hp: RolloutSettings, stats: RunningStatistics, obs: Observation) -> Observation:
    """What the networks see: the observation, normalised when that is switched on."""
    if not hp.normalise_observations:
        return obs
    return obs._replace(agent_view=normalise(stats, obs.agent_view))


# ROLLOUT


def rollout(
    networks: Networks, env: Any, hp: RolloutSettings, state: PPOLearnerState
) -> Tuple[PPOLearnerState, PPOTransition]:
    """Steps all envs of the replica `rollout_length` times with the current policy."""
    # Only what changes step to step is carried; parameters and statistics are closed over, so
    # the loop does not move the optimiser state around at every env step.
    actor_params, obs_stats = state.params.actor_params, state.obs_stats

    def step(
        carry: Tuple[PRNGKey, Any, Observation], _: None
    ) -> Tuple[Tuple[PRNGKey, Any, Observation], PPOTransition]:
        # Only the observation of the last timestep is carried: every extra carried array is
        # one more copy per env step, which is most of the loop's cost at a handful of envs.
        key, env_state, observation = carry
        key, act_key = jax.random.split(key)
        dist = networks.actor_apply(actor_params, observe(hp, obs_stats, observation))
        action = dist.sample(seed=act_key)
        log_prob = dist.log_prob(action)
        env_state, timestep = jax.vmap(env.step)(env_state, to_env_action(networks, action))
        transition = PPOTransition(
            observation=observation,
            action=action,
            log_prob=log_prob,
            reward=timestep.reward,
            discount=timestep.discount,
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
            episode_return=timestep.metrics.episode_return,
            episode_length=timestep.metrics.episode_length,
        )
        return (key, env_state, timestep.observation), transition

    (key, env_state, observation), traj = jax.lax.scan(
        step, (state.key, state.env_state, state.observation), None, length=hp.rollout_length
    )
    return state._replace(key=key, env_state=env_state, observation=observation), traj


# LOSSES AND THE MINIBATCH STEP


def actor_loss(
    actor_params: Params,
    networks: Networks,
    hp: PPOHyperparameters,
    policy_loss: PolicyLoss,
    batch: MinibatchData,
) -> Tuple[jax.Array, PPOLossInfo]:
    dist = networks.actor_apply(actor_params, batch.observation)
    advantage = masked_advantage(batch.advantage, batch.mask, hp.standardise_advantages)
    loss, approx_kl, clip_fraction = policy_loss(
        dist.log_prob(batch.action), batch.log_prob, advantage
    )
    entropy = masked_mean(policy_entropy(dist), batch.mask)
    zero = jnp.zeros(())
    info = PPOLossInfo(loss, zero, entropy, approx_kl, clip_fraction)
    return loss - hp.entropy_coefficient * entropy, info


def critic_loss(
    critic_params: Params, networks: Networks, hp: PPOHyperparameters, batch: MinibatchData
) -> jax.Array:
    values = networks.critic_apply(critic_params, batch.observation)
    if hp.value_clip_epsilon is None:
        loss = 0.5 * masked_mean(jnp.square(values - batch.target), batch.mask)
    else:
        loss = clipped_value_loss(
            values, batch.value, batch.target, hp.value_clip_epsilon, batch.mask
        )
    return hp.value_coefficient * loss


def minibatch_step(
    networks: Networks,
    hp: PPOHyperparameters,
    policy_loss: PolicyLoss,
    carry: Tuple[ActorCriticParams, ActorCriticOptStates],
    batch: MinibatchData,
) -> Tuple[Tuple[ActorCriticParams, ActorCriticOptStates], PPOLossInfo]:
    params, opt_states = carry
    actor_grads, info = jax.grad(actor_loss, has_aux=True)(
        params.actor_params, networks, hp, policy_loss, batch
    )
    value_loss, critic_grads = jax.value_and_grad(critic_loss)(
        params.critic_params, networks, hp, batch
    )
    grads = pmean_replicas(ActorCriticParams(actor_grads, critic_grads))
    return apply_actor_critic_grads(networks, params, opt_states, grads), info._replace(
        value_loss=value_loss
    )


def apply_actor_critic_grads(
    networks: Networks,
    params: ActorCriticParams,
    opt_states: ActorCriticOptStates,
    grads: ActorCriticParams,
) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
    """One step of the actor's and the critic's own optimisers (grads already averaged)."""
    actor_updates, actor_opt = networks.actor_optimiser.update(
        grads.actor_params, opt_states.actor_opt_state, params.actor_params
    )
    critic_updates, critic_opt = networks.critic_optimiser.update(
        grads.critic_params, opt_states.critic_opt_state, params.critic_params
    )
    params = ActorCriticParams(
        optax.apply_updates(params.actor_params, actor_updates),
        optax.apply_updates(params.critic_params, critic_updates),
    )
    return params, ActorCriticOptStates(actor_opt, critic_opt)


# ONE UPDATE: rollout, GAE, epochs × minibatches


def collect(
    networks: Networks, env: Any, hp: RolloutSettings, state: PPOLearnerState
) -> Tuple[PPOLearnerState, PPOTransition, MinibatchData]:
    """Rollout, refreshed observation statistics and GAE: what the learning steps consume.

    Returns:
        The state after the rollout (statistics refreshed for the NEXT update), the time-major
        trajectory [T, N], and its learning data flattened to [T·N].
    """
    state, traj = rollout(networks, env, hp, state)
    # The rollout acted on observations normalised with the statistics frozen at its start; the
    # learning below sees the same, and only the next update uses the refreshed statistics.
    observation = observe(hp, state.obs_stats, traj.observation)
    next_observation = observe(hp, state.obs_stats, traj.next_observation)
    obs_stats = state.obs_stats
    if hp.normalise_observations:
        obs_stats = update_statistics(obs_stats, traj.observation.agent_view, pmean_replicas)

    # Values of the observed and of the true next observations in one batched pass; at a
    # truncation the next observation is the episode's last, so the bootstrap is right.
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), observation, next_observation)
    values, next_values = networks.critic_apply(state.params.critic_params, both)
    advantages, targets = generalized_advantage_estimation(
        traj.reward, values, next_values, hp.gamma * traj.discount, traj.episode_end, hp.gae_lambda
    )
    data = MinibatchData(observation, traj.action, traj.log_prob, values, advantages, targets)
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
    return state._replace(obs_stats=obs_stats), traj, flat


def update_step(
    networks: Networks,
    env: Any,
    hp: PPOHyperparameters,
    policy_loss: PolicyLoss,
    state: PPOLearnerState,
) -> Tuple[PPOLearnerState, TrainMetrics]:
    state, traj, flat = collect(networks, env, hp, state)
    step = functools.partial(minibatch_step, networks, hp, policy_loss)
    (params, opt_states), key, info = run_epochs(
        step, (state.params, state.opt_states), flat, state.key, hp.epochs, hp.num_minibatches
    )
    metrics = summarise_episodes(
        traj.episode_end, traj.episode_return, traj.episode_length, jax.tree.map(jnp.mean, info)
    )
    return state._replace(params=params, opt_states=opt_states, key=key), metrics


# SET-UP


def make_optimiser(
    learning_rate: float, max_grad_norm: float, decay: bool, total_steps: int
) -> optax.GradientTransformation:
    schedule = optax.linear_schedule(learning_rate, 0.0, total_steps) if decay else learning_rate
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(schedule, eps=1e-5))


def ppo_policy_loss(sys_cfg: DictConfig) -> PolicyLoss:
    """PPO's clipped surrogate with `system.clip_epsilon`."""
    return functools.partial(clipped_policy_loss, clip_epsilon=float(sys_cfg.clip_epsilon))


def read_hyperparameters(sys_cfg: DictConfig, plan: RunPlan) -> PPOHyperparameters:
    value_clip = sys_cfg.value_clip_epsilon
    return PPOHyperparameters(
        gamma=float(sys_cfg.gamma),
        gae_lambda=float(sys_cfg.gae_lambda),
        value_clip_epsilon=None if value_clip is None else float(value_clip),
        entropy_coefficient=float(sys_cfg.entropy_coefficient),
        value_coefficient=float(sys_cfg.value_coefficient),
        standardise_advantages=bool(sys_cfg.standardise_advantages),
        epochs=int(sys_cfg.epochs),
        num_minibatches=int(sys_cfg.num_minibatches),
        rollout_length=plan.rollout_length,
        normalise_observations=bool(sys_cfg.normalise_observations),
    )


def make_networks(cfg: DictConfig, spec: EnvSpec, grad_steps: int) -> Tuple[Any, Any, Networks]:
    """The actor and critic modules from `network`, and their optimisers from `system`.

    Args:
        grad_steps: gradient steps over the whole run, the length of the learning-rate decay.
    """
    sys_cfg = cfg.system
    actor, critic = make_actor(cfg.network, spec), make_critic(cfg.network)
    decay = bool(sys_cfg.decay_learning_rates)
    continuous = spec.action_kind == "continuous"
    networks = Networks(
        actor_apply=actor.apply,
        critic_apply=critic.apply,
        actor_optimiser=make_optimiser(
            float(sys_cfg.actor_lr), float(sys_cfg.max_grad_norm), decay, grad_steps
        ),
        critic_optimiser=make_optimiser(
            float(sys_cfg.critic_lr), float(sys_cfg.max_grad_norm), decay, grad_steps
        ),
        action_low=jnp.asarray(spec.action_minimum) if continuous else None,
        action_high=jnp.asarray(spec.action_maximum) if continuous else None,
    )
    return actor, critic, networks


def init_actor_critic(
    env: Any, actor: Any, critic: Any, networks: Networks, params_key: PRNGKey
) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
    actor_key, critic_key, example_key = jax.random.split(params_key, 3)
    _, example = env.reset(example_key)
    return init_from_observation(
        example.observation, actor, critic, networks, actor_key, critic_key
    )


def init_from_observation(
    observation: Observation,
    actor: Any,
    critic: Any,
    networks: Networks,
    actor_key: PRNGKey,
    critic_key: PRNGKey,
) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
    """Parameters and optimiser states, shaped by one example observation."""
    params = ActorCriticParams(
        actor.init(actor_key, observation), critic.init(critic_key, observation)
    )
    opt_states = ActorCriticOptStates(
        networks.actor_optimiser.init(params.actor_params),
        networks.critic_optimiser.init(params.critic_params),
    )
    return params, opt_states


def init_replica(
    env: Any, num_envs: int, params: Any, opt_states: Any, replica_key: PRNGKey
) -> PPOLearnerState:
    """One replica's state: its own envs and key around the seed's shared params."""
    env_key, state_key = jax.random.split(replica_key)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(env_key, num_envs))
    obs_stats = init_statistics(env.spec.observation_shape)
    return PPOLearnerState(
        params, opt_states, state_key, env_state, timestep.observation, obs_stats
    )


def make_eval_act(
    actor_apply: ApplyFn, networks: Networks, hp: RolloutSettings
) -> Callable[[bool], Callable[..., jax.Array]]:
    """The evaluator's act function; it gets the observation statistics with the params, so it
    normalises exactly as training does."""

    def eval_act(greedy: bool):
        def act(
            policy: Tuple[Params, RunningStatistics], observation: Observation, key: PRNGKey
        ) -> jax.Array:
            params, obs_stats = policy
            dist = actor_apply(params, observe(hp, obs_stats, observation))
            action = greedy_action(dist) if greedy else dist.sample(seed=key)
            return to_env_action(networks, action)

        return act

    return eval_act


def make_build(
    make_policy_loss: Callable[[DictConfig], PolicyLoss],
) -> Callable[[BuildContext], SystemParts]:
    """`build` for a member of the PPO family: PPO's machinery around the given policy loss.

    Args:
        make_policy_loss: system config -> the policy loss (e.g. `ppo_policy_loss`).
    """

    def build(ctx: BuildContext) -> SystemParts:
        env, plan = ctx.env, ctx.plan
        hp = read_hyperparameters(ctx.config.system, plan)
        grad_steps = plan.num_updates * hp.epochs * hp.num_minibatches
        actor, critic, networks = make_networks(ctx.config, env.spec, grad_steps)
        policy_loss = make_policy_loss(ctx.config.system)
        num_envs = plan.envs_per_replica

        def init_shared(
            params_key: PRNGKey, tuned: Mapping[str, jax.Array]
        ) -> Tuple[ActorCriticParams, ActorCriticOptStates]:
            del tuned  # the family sweeps nothing (AnakinSystem.sweepable is empty)
            return init_actor_critic(env, actor, critic, networks, params_key)

        def init_state(
            shared: Tuple[ActorCriticParams, ActorCriticOptStates], replica_key: PRNGKey
        ) -> PPOLearnerState:
            return init_replica(env, num_envs, *shared, replica_key)

        return SystemParts(
            init_shared=init_shared,
            init_state=init_state,
            update_step=functools.partial(update_step, networks, env, hp, policy_loss),
            actor_params=lambda state: (state.params.actor_params, state.obs_stats),
            eval_act=make_eval_act(actor.apply, networks, hp),
        )

    return build


build = make_build(ppo_policy_loss)


def validate_on_policy(
    cfg: DictConfig,
    plan: RunPlan,
    batch_label: str = "arch.total_num_envs / (devices × arch.update_batch_size)",
    envs_per_learner: int | None = None,
) -> None:
    """The checks every member of the family needs (minibatch split, γ, λ, rates, epochs).

    Args:
        batch_label, envs_per_learner: how many envs one learner replica learns from, and how
            the config makes that number (Anakin's default: envs per replica).
    """
    envs = plan.envs_per_replica if envs_per_learner is None else envs_per_learner
    check_divides(
        f"{batch_label} × system.rollout_length",
        envs * plan.rollout_length,
        "system.num_minibatches",
        int(cfg.system.num_minibatches),
    )
    for key in ("gamma", "gae_lambda"):
        check_range(cfg, f"system.{key}", 0.0, 1.0)
    for key in ("actor_lr", "critic_lr", "max_grad_norm"):
        check_range(cfg, f"system.{key}", 0.0, float("inf"))
    check_range(cfg, "system.epochs", 1, float("inf"))


def validate(cfg: DictConfig, plan: RunPlan) -> None:
    validate_on_policy(cfg, plan)
    check_range(cfg, "system.clip_epsilon", 0.0, float("inf"))


SYSTEM = AnakinSystem(name="ff_ppo", action_kinds=("discrete",), build=build, validate=validate)


def run_experiment(cfg: DictConfig) -> float:
    """Trains PPO as configured; returns the last evaluation's mean episode return."""
    return run_anakin(cfg, SYSTEM)


@hydra_main("ff_ppo")
def main(cfg: DictConfig) -> float:
    return run_experiment(cfg)


if __name__ == "__main__":
    main()
