"""What one update of an on-policy actor-critic computes: rollout, collect (rollout → observation
statistics → GAE), the actor and critic losses, the minibatch step and the update skeleton.

These are the computational core of the systems `stoix.systems.on_policy_base` assembles (see
its docstring for who builds on it and what each member changes). Read top to bottom: acting,
the rollout, collect, the losses and the minibatch step, then one update.
"""

import functools
from typing import Any, Callable, NamedTuple, Protocol, Sequence, Tuple, TypeVar

import jax
import jax.numpy as jnp
import optax

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
from stoix.networks.distributions import policy_entropy
from stoix.parallel import pmean_replicas
from stoix.systems.ppo.ppo_losses import clipped_value_loss, masked_advantage
from stoix.systems.ppo.ppo_types import PPOLearnerState, PPOLossInfo, PPOTransition
from stoix.utils.minibatches import masked_mean, run_epochs
from stoix.utils.multistep import generalized_advantage_estimation
from stoix.utils.rollout import RolloutEnd, env_rollout
from stoix.utils.running_statistics import observe, update_statistics

ApplyFn = Callable[..., Any]
# (log π(a|s) [B], log π_old(a|s) [B], advantages [B]) -> (loss, approx KL, clip fraction): the
# policy-gradient surrogate, the one part in which PPO, DPO and REINFORCE differ.
PolicyLoss = Callable[[jax.Array, jax.Array, jax.Array], Tuple[jax.Array, jax.Array, jax.Array]]
Parts = TypeVar("Parts", bound=tuple)  # a NamedTuple of per-optimiser parts (params, states)


class PPOHyperparameters(NamedTuple):
    """The hyperparameters of the members that differ only in their `PolicyLoss`."""

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


class OnPolicySettings(Protocol):
    """What `rollout`, `collect` and `learn_epochs` read from a member's hyperparameters."""

    @property
    def gamma(self) -> float: ...

    @property
    def gae_lambda(self) -> float: ...

    @property
    def rollout_length(self) -> int: ...

    @property
    def normalise_observations(self) -> bool: ...

    @property
    def epochs(self) -> int: ...

    @property
    def num_minibatches(self) -> int: ...


class MinibatchData(NamedTuple):
    observation: Observation
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array
    # Rows that count in the losses; None: all of them. Sebulba masks the env-reset steps.
    mask: jax.Array | None = None


class Networks(NamedTuple):
    actor_apply: ApplyFn
    critic_apply: ApplyFn
    actor_optimiser: optax.GradientTransformation
    critic_optimiser: optax.GradientTransformation
    action_low: jax.Array | None  # continuous actions are clipped to these bounds for the env
    action_high: jax.Array | None

    @property
    def optimisers(self) -> Tuple[optax.GradientTransformation, ...]:
        """The actor's and the critic's optimisers, in the field order of ActorCriticParams."""
        return self.actor_optimiser, self.critic_optimiser


class ActorExtras(NamedTuple):
    """What the learner needs from the acting policy, per step."""

    action: jax.Array  # [N] or [N, A], as sampled (before clipping to the env's bounds)
    log_prob: jax.Array  # [N]


# ACTING


def to_env_action(networks: Networks, action: jax.Array) -> jax.Array:
    if networks.action_low is None:
        return action
    return jnp.clip(action, networks.action_low, networks.action_high)


def sample_action(
    networks: Networks, actor_params: Params, observation: Observation, key: PRNGKey
) -> Tuple[jax.Array, ActorExtras]:
    """A sample of the policy: the env's action, and the sampled action with its log-probability."""
    dist = networks.actor_apply(actor_params, observation)
    action = dist.sample(seed=key)
    extras = ActorExtras(action, dist.log_prob(action))
    return to_env_action(networks, action), extras


# ROLLOUT


def rollout(
    networks: Networks, env: Environment, hp: OnPolicySettings, state: PPOLearnerState
) -> Tuple[PPOLearnerState, PPOTransition]:
    """Steps all envs of the replica `rollout_length` times with the current policy."""
    # Parameters and statistics are closed over rather than carried, so the loop does not move
    # the optimiser state around at every env step.
    actor_params, obs_stats = state.params.actor_params, state.obs_stats

    def act(
        carry: Tuple[()], observation: Observation, key: PRNGKey
    ) -> Tuple[Tuple[()], jax.Array, ActorExtras]:
        seen = observe(obs_stats, observation, hp.normalise_observations)
        return (carry, *sample_action(networks, actor_params, seen, key))

    def record(observation: Observation, extras: ActorExtras, timestep: TimeStep) -> PPOTransition:
        return PPOTransition(
            observation=observation,
            action=extras.action,
            log_prob=extras.log_prob,
            reward=timestep.reward,
            discount=timestep.discount,
            episode_end=timestep.last(),
            next_observation=timestep.next_observation,
            episode_return=timestep.metrics.episode_return,
            episode_length=timestep.metrics.episode_length,
        )

    start = RolloutEnd(state.key, state.env_state, state.observation, actor_carry=())
    end, traj = env_rollout(env, act, record, start, hp.rollout_length)
    return state._replace(key=end.key, env_state=end.env_state, observation=end.observation), traj


def collect(
    networks: Networks, env: Environment, hp: OnPolicySettings, state: PPOLearnerState
) -> Tuple[PPOLearnerState, PPOTransition, MinibatchData]:
    """Rollout, refreshed observation statistics and GAE: what the learning steps consume.

    Returns:
        The state after the rollout (statistics refreshed for the NEXT update), the time-major
        trajectory [T, N], and its learning data flattened to [T·N].
    """
    state, traj = rollout(networks, env, hp, state)
    # The rollout acted on observations normalised with the statistics frozen at its start; the
    # learning below sees the same, and only the next update uses the refreshed statistics.
    observation = observe(state.obs_stats, traj.observation, hp.normalise_observations)
    next_observation = observe(state.obs_stats, traj.next_observation, hp.normalise_observations)
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
    return state._replace(obs_stats=obs_stats), traj, flatten_time(data)


def flatten_time(data: MinibatchData) -> MinibatchData:
    """[T, N, ...] -> [T·N, ...]: the batch the epochs shuffle."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)


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
    return apply_grads(networks.optimisers, params, opt_states, grads), info._replace(
        value_loss=value_loss
    )


def apply_grads(
    optimisers: Sequence[optax.GradientTransformation],
    params: Parts,
    opt_states: Any,
    grads: Sequence[Any],
) -> Tuple[Parts, Any]:
    """One step of each part's own optimiser (grads already averaged).

    Args:
        optimisers, params, opt_states, grads: one entry per part, in the same order (the actor
            and the critic; V-MPO adds its duals); params and opt_states are NamedTuples.
    """
    # All updates first, then all applications: the order the members always traced, kept so
    # that runs stay bit-identical.
    steps = [
        optimiser.update(part_grads, part_state, part_params)
        for optimiser, part_grads, part_state, part_params in zip(
            optimisers, grads, opt_states, params, strict=True
        )
    ]
    new_params = type(params)(
        *(
            optax.apply_updates(part, updates)
            for part, (updates, _) in zip(params, steps, strict=True)
        )
    )
    return new_params, type(opt_states)(*(state for _, state in steps))


# ONE UPDATE: collect, then epochs × minibatches


def learn_epochs(
    step: Callable[[Any, MinibatchData], Tuple[Any, Any]],
    hp: OnPolicySettings,
    state: PPOLearnerState,
    traj: PPOTransition,
    flat: MinibatchData,
) -> Tuple[PPOLearnerState, TrainMetrics]:
    """Epochs × minibatches of `step` over the collected data, and the update's metrics."""
    (params, opt_states), key, info = run_epochs(
        step, (state.params, state.opt_states), flat, state.key, hp.epochs, hp.num_minibatches
    )
    metrics = summarise_episodes(
        traj.episode_end, traj.episode_return, traj.episode_length, jax.tree.map(jnp.mean, info)
    )
    return state._replace(params=params, opt_states=opt_states, key=key), metrics


def update_step(
    networks: Networks,
    env: Environment,
    hp: PPOHyperparameters,
    policy_loss: PolicyLoss,
    state: PPOLearnerState,
) -> Tuple[PPOLearnerState, TrainMetrics]:
    state, traj, flat = collect(networks, env, hp, state)
    step = functools.partial(minibatch_step, networks, hp, policy_loss)
    return learn_epochs(step, hp, state, traj, flat)
