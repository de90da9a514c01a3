"""PPO's loss terms as pure functions, unit-tested on their own."""

from typing import Tuple

import jax
import jax.numpy as jnp
import rlax


def clipped_policy_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    clip_epsilon: float,
) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """PPO's clipped surrogate objective, as a loss to minimise.

    Returns:
        (loss, approximate KL(old || new), fraction of samples whose ratio was clipped).
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    loss = rlax.clipped_surrogate_pg_loss(ratio, advantages, clip_epsilon, use_stop_gradient=True)
    # The (r − 1) − log r estimator is unbiased and never negative (Schulman, 2020).
    approx_kl = jnp.mean((ratio - 1.0) - log_ratio)
    clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > clip_epsilon).astype(jnp.float32))
    return loss, jax.lax.stop_gradient(approx_kl), jax.lax.stop_gradient(clip_fraction)


def clipped_value_loss(
    values: jax.Array,
    old_values: jax.Array,
    targets: jax.Array,
    clip_epsilon: float,
) -> jax.Array:
    """Half the larger of the squared errors of the new value and of its clipped version.

    The clip keeps the critic within ±ε of the value it had when the data was collected, which
    is the critic-side counterpart of the policy ratio clip.
    """
    clipped = old_values + jnp.clip(values - old_values, -clip_epsilon, clip_epsilon)
    return 0.5 * jnp.mean(jnp.maximum(jnp.square(values - targets), jnp.square(clipped - targets)))


def standardise(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return (x - x.mean()) / (x.std() + eps)
