"""PPO loss terms against values worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.systems.ppo.ppo_losses import clipped_policy_loss, clipped_value_loss


def test_clipped_policy_loss_by_hand():
    old = jnp.log(jnp.array([0.5, 0.5, 0.5, 0.5]))
    new = jnp.log(jnp.array([0.75, 0.25, 0.55, 0.45]))  # ratios 1.5, 0.5, 1.1, 0.9
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    loss, kl, clip_fraction = clipped_policy_loss(new, old, adv, 0.2)
    # Objective per sample: min(r·A, clip(r)·A) = [1.2, 0.5, -1.1, -0.9]; loss is its negated mean.
    assert float(loss) == pytest.approx(-(1.2 + 0.5 - 1.1 - 0.9) / 4, rel=1e-5)
    assert float(clip_fraction) == pytest.approx(0.5)
    ratios = np.array([1.5, 0.5, 1.1, 0.9])
    assert float(kl) == pytest.approx(np.mean(ratios - 1 - np.log(ratios)), rel=1e-5)


def test_clipped_policy_gradient_vanishes_outside_the_clip():
    old = jnp.log(jnp.array([0.5]))
    adv = jnp.array([1.0])
    grad_inside = jax.grad(lambda lp: clipped_policy_loss(lp, old, adv, 0.2)[0])(
        jnp.log(jnp.array([0.55]))
    )
    grad_outside = jax.grad(lambda lp: clipped_policy_loss(lp, old, adv, 0.2)[0])(
        jnp.log(jnp.array([0.75]))
    )
    assert float(grad_inside[0]) < 0.0
    assert float(grad_outside[0]) == 0.0


def test_clipped_value_loss_by_hand():
    values = jnp.array([2.0, 0.0])
    old = jnp.array([1.0, 0.0])
    targets = jnp.array([1.0, 1.0])
    # Sample 0: unclipped (2-1)^2=1, clipped (1.2-1)^2=0.04 -> 1. Sample 1: both 1.
    assert float(clipped_value_loss(values, old, targets, 0.2)) == pytest.approx(0.5 * (1 + 1) / 2)
