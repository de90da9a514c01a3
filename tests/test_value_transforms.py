"""The categorical value support and its squashing, against values worked by hand."""

import jax.numpy as jnp
import numpy as np
import rlax

from stoix.utils.value_transforms import (
    ValueSupport,
    logits_to_scalar,
    scalar_to_support,
    squash,
    support_to_scalar,
    unsquash,
)


def test_squash_by_hand():
    # h(3) = √4 − 1 + 0.003; h(−8) = −(√9 − 1) − 0.008; h(0) = 0
    np.testing.assert_allclose(squash(jnp.array([3.0, -8.0, 0.0])), [1.003, -2.008, 0.0], rtol=1e-6)


def test_unsquash_inverts_squash_to_float32_precision_where_rlax_loses_digits():
    x = jnp.array([-1e4, -250.0, -3.0, -0.5, 0.0, 1e-3, 0.5, 3.0, 42.0, 500.0, 1e4])
    back = unsquash(squash(x))
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=1e-6)
    # rlax's closed form cancels in float32: h⁻¹(h(3)) is 2.99976.
    assert abs(float(rlax.signed_parabolic(squash(jnp.array(3.0)))) - 3.0) > 1e-4
    assert abs(float(unsquash(squash(jnp.array(3.0)))) - 3.0) < 1e-5


def test_two_hot_by_hand():
    support = ValueSupport(-2.0, 2.0, 5)  # atoms −2, −1, 0, 1, 2
    np.testing.assert_allclose(support.atoms, [-2.0, -1.0, 0.0, 1.0, 2.0])
    # h(x) = 0.25 sits a quarter of the way from atom 0 to atom 1: weights 0.75 and 0.25.
    x = unsquash(jnp.array(0.25))
    np.testing.assert_allclose(scalar_to_support(x, support), [0, 0, 0.75, 0.25, 0], atol=1e-4)
    # Beyond the support: everything on the end atom.
    np.testing.assert_allclose(scalar_to_support(jnp.array(1e6), support), [0, 0, 0, 0, 1])
    np.testing.assert_allclose(scalar_to_support(jnp.array(-1e6), support), [1, 0, 0, 0, 0])


def test_support_round_trip_within_range():
    support = ValueSupport(-20.0, 20.0, 41)
    x = jnp.array([[-300.0, -7.5, 0.0], [0.1, 12.0, 399.0]])  # |h(x)| ≤ 20 for |x| ≤ ~440
    probabilities = scalar_to_support(x, support)
    assert probabilities.shape == (2, 3, 41)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(support_to_scalar(probabilities, support), x, rtol=1e-3, atol=1e-3)


def test_logits_to_scalar_is_the_softmax_expectation_unsquashed():
    support = ValueSupport(-2.0, 2.0, 5)
    logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.2, 0.2]))
    expected = 0.1 * -2 + 0.2 * -1 + 0.3 * 0 + 0.2 * 1 + 0.2 * 2  # = 0.2 in squashed units
    np.testing.assert_allclose(logits_to_scalar(logits, support), unsquash(jnp.array(expected)))


def test_search_value_targets_by_hand_across_a_termination_and_a_truncation():
    from stoix.utils.multistep import search_value_targets

    # γ = 0.9; step 1 terminates, step 2 is truncated, step 3 is the rollout's last.
    rewards = jnp.array([[1.0], [2.0], [3.0], [4.0]])
    terminated = jnp.array([[0.0], [1.0], [0.0], [0.0]])
    episode_ends = jnp.array([[False], [True], [True], [False]])
    search_values = jnp.array([[10.0], [20.0], [30.0], [40.0]])
    bootstrap_values = jnp.array([[11.0], [21.0], [31.0], [41.0]])
    targets = search_value_targets(
        rewards, 0.9 * (1.0 - terminated), episode_ends, search_values, bootstrap_values, 0.5
    )
    # G3 = 4 + 0.9·41 (last step: the true next observation's value)
    # G2 = 3 + 0.9·31 (truncated: the final observation's value, no trace across)
    # G1 = 2 (terminated)
    # G0 = 1 + 0.9·(0.5·20 + 0.5·G1), with 20 the next step's search value
    np.testing.assert_allclose(targets[:, 0], [10.9, 2.0, 30.9, 40.9], rtol=1e-6)
