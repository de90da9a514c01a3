"""The critic targets and losses of DDPG, TD3 and D4PG as pure functions, unit-tested alone."""

import jax
import jax.numpy as jnp
import rlax


def smoothed_target_action(
    target_action: jax.Array,
    key: jax.Array,
    noise_std: float,
    noise_clip: float,
    low: jax.Array,
    high: jax.Array,
) -> jax.Array:
    """TD3's target policy smoothing: clipped Gaussian noise on the target actor's action.

    The noise's std and clip are fractions of the half action range, so one setting suits any
    action bounds; the result is clipped back into the bounds. A std of 0 gives DDPG's target.
    """
    half_range = (high - low) / 2.0
    noise = noise_std * jax.random.normal(key, target_action.shape)
    noise = jnp.clip(noise, -noise_clip, noise_clip) * half_range
    return jnp.clip(target_action + noise, low, high)


def td_regression_loss(
    q_tm1: jax.Array, next_value: jax.Array, reward: jax.Array, discount: jax.Array
) -> jax.Array:
    """Summed mean squared errors of K critics [K, B] toward r + discount · V(s') [B].

    `reward` is the n-step discounted sum and `discount` γ^k, 0 after a termination.
    """
    target = jax.lax.stop_gradient(reward + discount * next_value)
    return 0.5 * jnp.sum(jnp.mean(jnp.square(q_tm1 - target[None]), axis=-1))


def twin_critic_loss(
    q_tm1: jax.Array, next_q: jax.Array, reward: jax.Array, discount: jax.Array
) -> jax.Array:
    """`td_regression_loss` toward r + discount · min_k Q'_k(s', a'), with next_q [K, B] the
    target critics' values: K = 1 is DDPG's target, K = 2 TD3's clipped double-Q target."""
    return td_regression_loss(q_tm1, jnp.min(next_q, axis=0), reward, discount)


def categorical_critic_loss(
    logits_tm1: jax.Array,
    next_logits: jax.Array,
    atoms: jax.Array,
    reward: jax.Array,
    discount: jax.Array,
) -> jax.Array:
    """D4PG's distributional loss: cross-entropy to the target distribution shifted by r + γ·z
    and projected back onto the atoms (rlax's categorical TD learning), averaged over the batch.

    Args:
        logits_tm1: [B, Z] the critic's logits at (s, a); next_logits: [B, Z] the target
            critic's at (s', a'); atoms: [Z] the fixed support.
    """
    per_sample = jax.vmap(rlax.categorical_td_learning, in_axes=(None, 0, 0, 0, None, 0))(
        atoms, logits_tm1, reward, discount, atoms, next_logits
    )
    return jnp.mean(per_sample)


def categorical_mean(logits: jax.Array, atoms: jax.Array) -> jax.Array:
    """The expected value of a categorical distribution over `atoms` given its logits."""
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)
