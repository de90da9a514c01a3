"""Epochs × shuffled minibatches over one rollout's data: the learning loop of the on-policy and
online systems (PPO, PQN and its variants), written once."""

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp

from stoix.base_types import PRNGKey


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over the rows `mask` keeps (all rows when it is None), e.g. without the env-reset
    steps of host-env rollouts."""
    if mask is None:
        return jnp.mean(x)
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def run_epochs(
    step: Callable[[Any, Any], Tuple[Any, Any]],
    carry: Any,
    data: Any,
    key: PRNGKey,
    epochs: int,
    num_minibatches: int,
) -> Tuple[Any, PRNGKey, Any]:
    """Runs `step(carry, minibatch)` over `data` split into `num_minibatches`, `epochs` times.

    Args:
        step: one gradient step; returns the new carry and per-step info.
        carry: what the steps update (parameters, optimiser states).
        data: leaves with a leading batch axis [B, ...]; B divisible by `num_minibatches`.
        key: reshuffles the batch before every epoch.

    Returns:
        The final carry, the advanced key, and the info stacked as [epochs, num_minibatches].
    """
    batch_size = jax.tree.leaves(data)[0].shape[0]

    def epoch(state: Tuple[Any, PRNGKey], _: None):
        carry, key = state
        key, shuffle_key = jax.random.split(key)
        order = jax.random.permutation(shuffle_key, batch_size)
        minibatches = jax.tree.map(
            lambda x: x[order].reshape((num_minibatches, -1) + x.shape[1:]), data
        )
        carry, info = jax.lax.scan(step, carry, minibatches)
        return (carry, key), info

    (carry, key), info = jax.lax.scan(epoch, (carry, key), None, length=epochs)
    return carry, key, info
