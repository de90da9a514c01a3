"""PPO's loss terms as pure functions, unit-tested on their own."""

from typing import Tuple

import jax
import jax.numpy as jnp
import rlax

from stoix.utils.minibatches import masked_mean


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
    mask: jax.Array | None = None,
) -> jax.Array:
    """Half the larger of the squared errors of the new value and of its clipped version.

    The clip keeps the critic within ±ε of the value it had when the data was collected, which
    is the critic-side counterpart of the policy ratio clip.
    """
    clipped = old_values + jnp.clip(values - old_values, -clip_epsilon, clip_epsilon)
    errors = jnp.maximum(jnp.square(values - targets), jnp.square(clipped - targets))
    return 0.5 * masked_mean(errors, mask)


def standardise(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return (x - x.mean()) / (x.std() + eps)


def masked_advantage(advantage: jax.Array, mask: jax.Array | None, standardised: bool) -> jax.Array:
    """The advantages the policy loss sees, masked rows weighted out.

    Masked rows get weight 0 and the others batch / kept rows, so the loss's plain mean over the
    batch equals the mean over the kept rows for every loss linear in the advantage (PPO's
    clipped surrogate, REINFORCE).
    """
    if mask is None:
        return standardise(advantage) if standardised else advantage
    kept = jnp.maximum(jnp.sum(mask), 1)
    if standardised:
        mean = jnp.sum(jnp.where(mask, advantage, 0.0)) / kept
        std = jnp.sqrt(jnp.sum(jnp.where(mask, jnp.square(advantage - mean), 0.0)) / kept)
        advantage = (advantage - mean) / (std + 1e-8)
    return jnp.where(mask, advantage, 0.0) * (advantage.shape[0] / kept)


def dpo_policy_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    alpha: float = 2.0,
    beta: float = 0.6,
) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Discovered Policy Optimisation's objective (Lu et al., 2022), as a loss to minimise.

    The ratio r·A minus the discovered drift, which replaces PPO's clip:

        A ≥ 0: drift = relu((r − 1)·A − α·tanh((r − 1)·A / α))
        A < 0: drift = relu(log(r)·A − β·tanh(log(r)·A / β))

    The drift and its slope vanish at r = 1, so the first step from the rollout policy is the
    plain policy gradient; it grows once r·A moves the policy far in the direction A favours.

    Returns:
        (loss, approximate KL(old || new), fraction of samples the drift penalises).
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    rise = (ratio - 1.0) * advantages
    fall = log_ratio * advantages
    drift = jnp.where(
        advantages >= 0.0,
        jax.nn.relu(rise - alpha * jnp.tanh(rise / alpha)),
        jax.nn.relu(fall - beta * jnp.tanh(fall / beta)),
    )
    loss = -jnp.mean(ratio * advantages - drift)
    approx_kl = jnp.mean((ratio - 1.0) - log_ratio)
    drift_fraction = jnp.mean((drift > 0.0).astype(jnp.float32))
    return loss, jax.lax.stop_gradient(approx_kl), jax.lax.stop_gradient(drift_fraction)
