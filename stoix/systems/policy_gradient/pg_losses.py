"""The vanilla policy-gradient loss, as a pure function unit-tested on its own."""

from typing import Tuple

import jax
import jax.numpy as jnp


def policy_gradient_loss(
    log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array
) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """REINFORCE's surrogate −mean(log π(a|s) · A); the advantages carry no gradient.

    Its gradient is the score-function estimate −mean(A · ∇ log π(a|s)) (Williams, 1992) with a
    baseline already inside A. `old_log_prob` only measures how far the policy has moved, which
    is zero on the first (by default the only) pass over a rollout.

    Returns:
        (loss, approximate KL(old || new), 0: nothing is clipped), the shape of a `PolicyLoss`.
    """
    loss = -jnp.mean(log_prob * jax.lax.stop_gradient(advantages))
    log_ratio = jax.lax.stop_gradient(log_prob - old_log_prob)
    approx_kl = jnp.mean(jnp.expm1(log_ratio) - log_ratio)
    return loss, approx_kl, jnp.zeros(())
