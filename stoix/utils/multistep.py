"""Multi-step return estimators shared by the systems.

All functions take time-major arrays [T, ...] and treat truncation and termination apart:
`discounts` is γ·(1 − terminated), so a terminal step never bootstraps, and `episode_ends`
marks every step that ended an episode (terminated or truncated) so that no trace crosses into
the next episode. `next_values` are the values of the true next observations, which after a
truncation is the episode's final observation, not the auto-reset one.
"""

from typing import Tuple

import jax
import jax.numpy as jnp


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
