"""Helpers that treat every policy distribution the same way."""

import distrax
import jax


def _is_squashed(dist: distrax.Distribution) -> bool:
    # distrax builds MultivariateNormalDiag as a Transformed standard normal; it is not squashed
    # and has its own closed-form entropy and mode.
    return isinstance(dist, distrax.Transformed) and not isinstance(
        dist, distrax.MultivariateNormalDiag
    )


def greedy_action(dist: distrax.Distribution) -> jax.Array:
    """The most likely action; for squashed Gaussians, the squashed mode of the base."""
    if _is_squashed(dist):
        return dist.bijector.forward(dist.distribution.mode())
    return dist.mode()


def policy_entropy(dist: distrax.Distribution) -> jax.Array:
    """Closed-form entropy; for squashed Gaussians, the base Gaussian's (a standard proxy, since
    the squashed entropy has no closed form)."""
    if _is_squashed(dist):
        return dist.distribution.entropy()
    return dist.entropy()
