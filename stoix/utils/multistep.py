"""Multi-step return estimators shared by the systems.

All functions take time-major arrays [T, ...] and treat truncation and termination apart:
`discounts` is γ·(1 − terminated), so a terminal step never bootstraps, and `episode_ends`
marks every step that ended an episode (terminated or truncated) so that no trace crosses into
the next episode. `next_values` are the values of the true next observations, which after a
truncation is the episode's final observation, not the auto-reset one.
"""

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import rlax


def generalized_advantage_estimation(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    discounts: jax.Array,
    episode_ends: jax.Array,
    gae_lambda: float,
) -> Tuple[jax.Array, jax.Array]:
    """GAE(λ) over one rollout.

    A_t = δ_t + γλ(1 − end_t) A_{t+1}, with δ_t = r_t + discount_t · V(s'_t) − V(s_t) and
    A_T = 0 past the rollout (the last step bootstraps through δ alone).

    Returns:
        (advantages, value targets), both shaped like `rewards`.
    """
    deltas = rewards + discounts * next_values - values
    # γ is inside `discounts` except where the step terminated, and there the trace is cut by
    # `episode_ends` anyway, so recovering γ is unnecessary: carry discounts · λ directly and
    # use the (1 − end) mask to also cut traces at truncations.
    trace_decay = discounts * gae_lambda * (1.0 - episode_ends.astype(deltas.dtype))

    def backward(next_advantage: jax.Array, inputs: Tuple[jax.Array, jax.Array]):
        delta, decay = inputs
        advantage = delta + decay * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(deltas[0]), (deltas, trace_decay), reverse=True, unroll=8
    )
    return advantages, advantages + values


class NStepTarget(NamedTuple):
    """The pieces of an n-step bootstrapped target r + γ^k · d · Q(s_{t+k}, ·), per sample."""

    reward: jax.Array  # [B] discounted sum of the rewards inside the episode
    discount: jax.Array  # [B] γ^k, or 0 when the episode terminated within the k steps
    last_index: jax.Array  # [B] int32, k − 1: the step whose next observation is bootstrapped


def n_step_target(
    rewards: jax.Array, terminated: jax.Array, episode_ends: jax.Array, gamma: float
) -> NStepTarget:
    """Folds sampled sequences of n consecutive transitions into one n-step transition each.

    Batch-major [B, n] inputs, as flashbax samples them. The sum stops at the first episode end
    inside the sequence: a termination there leaves nothing to bootstrap (discount 0); a
    truncation bootstraps from that step's true final observation, which is why the caller
    takes the next observation at `last_index` rather than at the end of the sequence. rlax's
    n-step returns cannot do this, because they only see a discount and would run on into the
    next episode after a truncation.

    Args:
        rewards: [B, n] rewards r_t … r_{t+n−1}.
        terminated: [B, n] whether each step reached a terminal state.
        episode_ends: [B, n] whether each step ended its episode (terminated or truncated).
        gamma: discount per step.
    """
    n = rewards.shape[-1]
    ends = episode_ends.astype(rewards.dtype)
    # Step k counts when no earlier step of the sequence ended the episode.
    in_episode = jnp.cumprod(
        jnp.concatenate([jnp.ones_like(ends[..., :1]), 1.0 - ends[..., :-1]], -1), -1
    )
    powers = gamma ** jnp.arange(n, dtype=rewards.dtype)
    reward = jnp.sum(in_episode * powers * rewards, axis=-1)
    last_index = (jnp.sum(in_episode, axis=-1) - 1).astype(jnp.int32)
    last_terminated = jnp.take_along_axis(terminated, last_index[..., None], -1)[..., 0]
    discount = gamma ** (last_index + 1).astype(rewards.dtype) * (
        1.0 - last_terminated.astype(rewards.dtype)
    )
    return NStepTarget(reward, discount, last_index)


def q_lambda_targets(
    rewards: jax.Array,
    discounts: jax.Array,
    next_values: jax.Array,
    episode_ends: jax.Array,
    q_lambda: float,
) -> jax.Array:
    """Peng's Q(λ) targets over one rollout, as PQN computes them.

    G_t = r_t + discount_t · [(1 − λ_t) V(s'_t) + λ_t G_{t+1}], with λ_t = λ·(1 − end_t) and
    V(s'_t) = max_a Q(s'_t, a) taken at each step's TRUE next observation. Cutting λ at episode
    ends keeps a trace from running into the next episode; bootstrapping every step from its own
    next observation makes the last steps of a rollout right (the last one bootstraps from
    V(s'_{T−1}), the second-to-last mixes G_{T−1} with V(s'_{T−2}), never with the wrong state).
    rlax's `lambda_returns` does the recursion, vmapped over the env axis.

    Args:
        rewards, discounts, next_values, episode_ends: time-major [T, N].
        q_lambda: the trace parameter λ.
    """
    lambdas = q_lambda * (1.0 - episode_ends.astype(rewards.dtype))
    return jax.vmap(rlax.lambda_returns, in_axes=1, out_axes=1)(
        rewards, discounts, next_values, lambdas
    )


def search_value_targets(
    rewards: jax.Array,
    discounts: jax.Array,
    episode_ends: jax.Array,
    search_values: jax.Array,
    bootstrap_values: jax.Array,
    td_lambda: float,
) -> jax.Array:
    """λ-return value targets of a search-based learner (AlphaZero, SPO), bootstrapped from the
    search's root values.

    V(s'_t) is the next step's root search value v_{t+1} while the episode goes on inside the
    rollout; after an episode end (where the next searched observation is the next episode's
    first) and at the rollout's last step it is `bootstrap_values`, the value of the TRUE next
    observation (the network's; a termination multiplies it by a zero discount anyway). Then
    G_t = r_t + discount_t · [(1 − λ_t) V(s'_t) + λ_t G_{t+1}], λ cut at episode ends
    (`q_lambda_targets`); λ = 0 gives one-step targets, λ = 1 Monte Carlo returns to the end.

    Args:
        rewards, discounts, episode_ends: time-major [T, N] (discounts = γ·(1 − terminated)).
        search_values: [T, N] root value of the search at each step's observation.
        bootstrap_values: [T, N] value of each step's true next observation.
        td_lambda: the trace parameter λ.
    """
    following = jnp.concatenate([search_values[1:], bootstrap_values[-1:]], axis=0)
    use_bootstrap = episode_ends.at[-1].set(True)
    next_values = jnp.where(use_bootstrap, bootstrap_values, following)
    return q_lambda_targets(rewards, discounts, next_values, episode_ends, td_lambda)
