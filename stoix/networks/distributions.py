"""Helpers that treat every policy distribution the same way."""

import distrax
import jax


def greedy_action(dist: distrax.Distribution) -> jax.Array:
    """The most likely action; for squashed Gaussians, the squashed mode of the base."""
    if isinstance(dist, distrax.Transformed):
        return dist.bijector.forward(dist.distribution.mode())
    return dist.mode()


def policy_entropy(dist: distrax.Distribution) -> jax.Array:
    """Closed-form entropy; for squashed Gaussians, the base Gaussian's (a standard proxy, since
    the squashed entropy has no closed form)."""
    if isinstance(dist, distrax.Transformed):
        return dist.distribution.entropy()
    return dist.entropy()
