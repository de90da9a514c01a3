"""AWR's loss terms (Peng et al., 2019) as pure functions, unit-tested on their own."""

from typing import Tuple

import jax
import jax.numpy as jnp


def advantage_weights(advantages: jax.Array, beta: float, max_weight: float) -> jax.Array:
    """w = min(exp(A / β), max_weight): the exponentiated advantage, clipped from above."""
    # exp overflows to inf for large A/β; the minimum brings it back to max_weight.
    return jnp.minimum(jnp.exp(advantages / beta), max_weight)


def awr_policy_loss(
    log_probs: jax.Array, advantages: jax.Array, beta: float, max_weight: float
) -> Tuple[jax.Array, jax.Array]:
    """−mean w(A) · log π(a|s): weighted regression onto the replayed actions.

    The weights are constants (no gradient flows into the critic through them).

    Returns:
        (loss, weights).
    """
    weights = jax.lax.stop_gradient(advantage_weights(advantages, beta, max_weight))
    return -jnp.mean(weights * log_probs), weights
