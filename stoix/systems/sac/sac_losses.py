"""SAC's soft policy evaluation, policy and temperature losses as pure functions.

Continuous and discrete SAC differ only in how an expectation over the policy is taken: by one
reparameterised sample for a tanh-Gaussian, exactly over the actions for a categorical policy
(Christodoulou, 2019). Both reduce to a `PolicyExpectation`, and every loss below reads only that.
"""

from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp


class PolicyExpectation(NamedTuple):
    q: jax.Array  # [B] E_{a~π}[min_k Q_k(s, a)]
    log_prob: jax.Array  # [B] E_{a~π}[log π(a|s)], i.e. minus the policy's entropy


def categorical_expectation(dist: distrax.Categorical, q_values: jax.Array) -> PolicyExpectation:
    """Exact expectations over a categorical policy of Q [B, A] and of log π.

    Actions a mask forbids have probability 0; their log-probability is huge and negative, so
    they are excluded explicitly rather than multiplied by zero.
    """
    probs = dist.probs
    weighted_log_probs = jnp.where(probs > 0, probs * jax.nn.log_softmax(dist.logits), 0.0)
    return PolicyExpectation(
        q=jnp.sum(probs * q_values, axis=-1), log_prob=jnp.sum(weighted_log_probs, axis=-1)
    )


def soft_value(expectation: PolicyExpectation, alpha: jax.Array) -> jax.Array:
    """V(s) = E_π[Q(s, a) − α log π(a|s)]."""
    return expectation.q - alpha * expectation.log_prob


def policy_loss(expectation: PolicyExpectation, alpha: jax.Array) -> jax.Array:
    """The actor minimises E_π[α log π(a|s) − Q(s, a)], i.e. maximises the soft value."""
    return jnp.mean(alpha * expectation.log_prob - expectation.q)


def temperature_loss(
    log_alpha: jax.Array, expected_log_prob: jax.Array, target_entropy: float
) -> jax.Array:
    """Haarnoja et al. (2018b): α rises while the entropy is below its target, falls above it.

    Taken in log α, so gradient steps stay proportionate whatever the scale of α.
    """
    entropy_gap = jax.lax.stop_gradient(expected_log_prob + target_entropy)
    return -jnp.mean(log_alpha * entropy_gap)
