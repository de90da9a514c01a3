"""GAE against hand-computed cases, including truncation and termination, and against rlax."""

import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from stoix.utils.multistep import generalized_advantage_estimation

GAMMA, LAM = 0.9, 0.8


def gae(rewards, values, next_values, terminated, ended):
    rewards, values, next_values = map(
        lambda x: jnp.asarray(x, jnp.float32), (rewards, values, next_values)
    )
    discounts = GAMMA * (1.0 - jnp.asarray(terminated, jnp.float32))
    return generalized_advantage_estimation(
        rewards, values, next_values, discounts, jnp.asarray(ended, bool), LAM
    )


def test_no_episode_end_matches_hand_computation():
    r, v, nv = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [1.0, 1.5, 2.0]
    d0 = 1 + 0.9 * 1.0 - 0.5  # 1.4
    d1 = 2 + 0.9 * 1.5 - 1.0  # 2.35
    d2 = 3 + 0.9 * 2.0 - 1.5  # 3.3
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    adv, targets = gae(r, v, nv, [0, 0, 0], [0, 0, 0])
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(targets, np.array([a0, a1, a2]) + np.array(v), rtol=1e-6)


def test_termination_never_bootstraps_and_cuts_the_trace():
    # Step 1 terminates: its delta ignores next value (99) and step 0 does not see step 2.
    r, v, nv = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [1.0, 99.0, 2.0]
    d0 = 1 + 0.9 * 1.0 - 0.5
    d1 = 2 - 1.0
    d2 = 3 + 0.9 * 2.0 - 1.5
    adv, _ = gae(r, v, nv, [0, 1, 0], [0, 1, 0])
    np.testing.assert_allclose(adv, [d0 + 0.72 * d1, d1, d2], rtol=1e-6)


def test_truncation_bootstraps_from_final_observation_but_cuts_the_trace():
    # Step 1 is truncated: bootstrap from V(final obs) = 7, but do not carry step 2's advantage.
    r, v, nv = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [1.0, 7.0, 2.0]
    d0 = 1 + 0.9 * 1.0 - 0.5
    d1 = 2 + 0.9 * 7.0 - 1.0
    d2 = 3 + 0.9 * 2.0 - 1.5
    adv, _ = gae(r, v, nv, [0, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(adv, [d0 + 0.72 * d1, d1, d2], rtol=1e-6)


def test_terminal_and_truncated_differ_only_in_the_bootstrap():
    r, v, nv = [0.0, 1.0], [0.0, 0.0], [0.0, 10.0]
    adv_term, _ = gae(r, v, nv, [0, 1], [0, 1])
    adv_trunc, _ = gae(r, v, nv, [0, 0], [0, 1])
    assert float(adv_term[1]) == pytest.approx(1.0)
    assert float(adv_trunc[1]) == pytest.approx(1.0 + 0.9 * 10.0)


def test_matches_rlax_when_next_values_follow_values():
    rng = np.random.default_rng(0)
    T = 12
    rewards = rng.normal(size=T).astype(np.float32)
    values_ext = rng.normal(size=T + 1).astype(np.float32)
    terminated = (rng.random(T) < 0.2).astype(np.float32)
    discounts = GAMMA * (1 - terminated)
    expected = rlax.truncated_generalized_advantage_estimation(rewards, discounts, LAM, values_ext)
    adv, _ = generalized_advantage_estimation(
        jnp.asarray(rewards),
        jnp.asarray(values_ext[:-1]),
        jnp.asarray(values_ext[1:]),
        jnp.asarray(discounts),
        jnp.asarray(terminated.astype(bool)),
        LAM,
    )
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)


def test_batched_over_envs():
    r = jnp.ones((4, 3))
    v = jnp.zeros((4, 3))
    adv, _ = generalized_advantage_estimation(
        r, v, v, jnp.full((4, 3), GAMMA), jnp.zeros((4, 3), bool), LAM
    )
    assert adv.shape == (4, 3)
    np.testing.assert_allclose(adv[-1], 1.0)
    np.testing.assert_allclose(adv[0], 1 + 0.72 + 0.72**2 + 0.72**3, rtol=1e-6)


# Q(λ) (PQN): r = [1, 2, 3], V(s'_t) = max_a Q at each step's true next observation = [10, 20, 30],
# γ = 0.9, λ = 0.5.


def q_lambda(terminated, ended, lam=0.5):
    from stoix.utils.multistep import q_lambda_targets

    rewards = jnp.asarray([[1.0], [2.0], [3.0]])
    next_values = jnp.asarray([[10.0], [20.0], [30.0]])
    discounts = 0.9 * (1.0 - jnp.asarray(terminated, jnp.float32)[:, None])
    return np.asarray(
        q_lambda_targets(rewards, discounts, next_values, jnp.asarray(ended, bool)[:, None], lam)
    )[:, 0]


def test_q_lambda_last_two_steps_of_a_rollout():
    # G2 = 3 + 0.9·30; G1 mixes ITS OWN next value (20) with G2; G0 likewise with 10 and G1.
    g2 = 3 + 0.9 * 30
    g1 = 2 + 0.9 * (0.5 * 20 + 0.5 * g2)
    g0 = 1 + 0.9 * (0.5 * 10 + 0.5 * g1)
    np.testing.assert_allclose(q_lambda([0, 0, 0], [0, 0, 0]), [g0, g1, g2], rtol=1e-6)
    np.testing.assert_allclose([g0, g1, g2], [16.525, 24.5, 30.0])


def test_q_lambda_termination_never_bootstraps():
    np.testing.assert_allclose(
        q_lambda([0, 1, 0], [0, 1, 0]), [1 + 0.9 * (0.5 * 10 + 0.5 * 2), 2.0, 30.0], rtol=1e-6
    )


def test_q_lambda_truncation_bootstraps_from_the_final_observation_only():
    # Step 1 is truncated: it bootstraps fully from its own final observation (20) and does not
    # see G2, which belongs to the next episode.
    np.testing.assert_allclose(
        q_lambda([0, 0, 0], [0, 1, 0]), [1 + 0.9 * (0.5 * 10 + 0.5 * 20), 20.0, 30.0], rtol=1e-6
    )


def test_q_lambda_zero_is_one_step_q_learning():
    np.testing.assert_allclose(q_lambda([0, 0, 0], [0, 0, 0], lam=0.0), [10.0, 20.0, 30.0])
