"""Q-learning targets and losses against hand-computed cases, including a terminal next state
(no bootstrap) and a truncated one (bootstrap from the true final observation)."""

import jax.numpy as jnp
import numpy as np
import pytest

from stoix.base_types import Observation
from stoix.systems.q_learning import q_losses
from stoix.systems.q_learning.dqn_base import fold_n_step
from stoix.systems.q_learning.q_acting import epsilon_greedy
from stoix.systems.q_learning.q_types import QTransition
from stoix.utils.multistep import n_step_target

GAMMA = 0.9


def f32(x):
    return jnp.asarray(x, jnp.float32)


# N-STEP TARGETS


@pytest.mark.parametrize(
    "terminated, ends, reward, discount, last",
    [
        # No episode end: 1 + 0.9·2 + 0.81·3, bootstrap γ³ from the third next observation.
        ([0, 0, 0], [0, 0, 0], 5.23, 0.729, 2),
        # Termination at the second step: the sum stops there and nothing is bootstrapped.
        ([0, 1, 0], [0, 1, 0], 2.8, 0.0, 1),
        # Truncation at the first step: bootstrap γ from that step's (true final) observation.
        ([0, 0, 0], [1, 0, 0], 1.0, 0.9, 0),
        # Truncation at the second step.
        ([0, 0, 0], [0, 1, 0], 2.8, 0.81, 1),
        # Termination on the last step of the sequence.
        ([0, 0, 1], [0, 0, 1], 5.23, 0.0, 2),
    ],
    ids=["no_end", "terminated_mid", "truncated_first", "truncated_mid", "terminated_last"],
)
def test_n_step_target_by_hand(terminated, ends, reward, discount, last):
    out = n_step_target(
        f32([[1.0, 2.0, 3.0]]), jnp.asarray([terminated], bool), jnp.asarray([ends], bool), GAMMA
    )
    np.testing.assert_allclose(out.reward, [reward], rtol=1e-6)
    np.testing.assert_allclose(out.discount, [discount], rtol=1e-6)
    assert int(out.last_index[0]) == last


def test_one_step_target_is_reward_and_discount():
    out = n_step_target(
        f32([[2.0], [3.0]]), jnp.asarray([[False], [True]]), jnp.asarray([[True], [True]]), GAMMA
    )
    np.testing.assert_allclose(out.reward, [2.0, 3.0])
    np.testing.assert_allclose(out.discount, [0.9, 0.0])


def _obs(values):
    values = f32(values)
    return Observation(values[..., None], jnp.ones(values.shape + (2,), bool), values.astype(int))


def test_fold_n_step_bootstraps_from_the_truncated_episodes_final_observation():
    # Two sequences of 3; the first is truncated at step 1, whose true next observation is 11
    # (the auto-reset observation that follows it, 20, must not be used).
    sequences = QTransition(
        observation=_obs([[0.0, 1.0, 20.0], [5.0, 6.0, 7.0]]),
        action=jnp.asarray([[1, 0, 0], [0, 1, 1]]),
        reward=f32([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]),
        terminated=jnp.zeros((2, 3), bool),
        episode_end=jnp.asarray([[False, True, False], [False, False, False]]),
        next_observation=_obs([[1.0, 11.0, 21.0], [6.0, 7.0, 8.0]]),
    )

    class HP:
        gamma = GAMMA

    batch = fold_n_step(HP, sequences)
    np.testing.assert_allclose(batch.next_observation.agent_view[:, 0], [11.0, 8.0])
    np.testing.assert_allclose(batch.observation.agent_view[:, 0], [0.0, 5.0])
    np.testing.assert_array_equal(batch.action, [1, 0])
    np.testing.assert_allclose(batch.reward, [1.9, 2.71], rtol=1e-6)
    np.testing.assert_allclose(batch.discount, [0.81, 0.729], rtol=1e-6)


# ONE-STEP LOSSES: q_tm1 = [1, 2], a = 0, r = 1, q_t = [3, 5] (values), selector [7, 1]

Q_TM1, ACTION, REWARD, Q_T, SELECTOR = (
    f32([[1.0, 2.0]]),
    jnp.asarray([0]),
    f32([1.0]),
    f32([[3.0, 5.0]]),
    f32([[7.0, 1.0]]),
)


def test_q_learning_bootstraps_on_truncation_and_not_on_termination():
    # Bootstrapping (truncation or mid-episode): target 1 + 0.9·5 = 5.5, TD 4.5.
    loss, priority = q_losses.q_learning(Q_TM1, ACTION, REWARD, f32([0.9]), Q_T, huber_delta=0.0)
    np.testing.assert_allclose(loss, [0.5 * 4.5**2], rtol=1e-6)
    np.testing.assert_allclose(priority, [4.5], rtol=1e-6)
    # Huber δ=1: 4.5 − 0.5.
    loss, _ = q_losses.q_learning(Q_TM1, ACTION, REWARD, f32([0.9]), Q_T, huber_delta=1.0)
    np.testing.assert_allclose(loss, [4.0], rtol=1e-6)
    # Terminal: target is the reward alone, TD 0.
    loss, priority = q_losses.q_learning(Q_TM1, ACTION, REWARD, f32([0.0]), Q_T, huber_delta=0.0)
    np.testing.assert_allclose(loss, [0.0], atol=1e-7)
    np.testing.assert_allclose(priority, [0.0], atol=1e-7)


def test_double_q_learning_values_the_online_choice_with_the_target_net():
    # The selector prefers action 0, whose target value is 3: target 1 + 0.9·3 = 3.7, TD 2.7.
    loss, priority = q_losses.double_q_learning(
        Q_TM1, ACTION, REWARD, f32([0.9]), Q_T, SELECTOR, huber_delta=0.0
    )
    np.testing.assert_allclose(priority, [2.7], rtol=1e-6)
    np.testing.assert_allclose(loss, [0.5 * 2.7**2], rtol=1e-6)
    _, priority = q_losses.double_q_learning(
        Q_TM1, ACTION, REWARD, f32([0.0]), Q_T, SELECTOR, huber_delta=0.0
    )
    np.testing.assert_allclose(priority, [0.0], atol=1e-7)


def test_regularised_q_learning_adds_the_q_penalty():
    loss, _ = q_losses.regularised_q_learning(Q_TM1, ACTION, REWARD, f32([0.9]), Q_T, 0.1)
    np.testing.assert_allclose(loss, [0.5 * 4.5**2 + 0.1 * 1.0], rtol=1e-6)
    # Terminal: TD 0, only the penalty on Q(s, a) = 1 remains.
    loss, priority = q_losses.regularised_q_learning(Q_TM1, ACTION, REWARD, f32([0.0]), Q_T, 0.1)
    np.testing.assert_allclose(loss, [0.1], rtol=1e-6)
    np.testing.assert_allclose(priority, [0.0], atol=1e-7)


def test_munchausen_by_hand():
    tau, alpha, clip = 0.5, 0.9, -1.0
    q_tm1_target = np.array([1.0, 2.0])
    log_pi_tm1 = q_tm1_target / tau - np.log(np.sum(np.exp(q_tm1_target / tau)))
    bonus = alpha * tau * np.clip(log_pi_tm1[0], clip, 0.0)  # log π(a0) = −2.13 → clipped −1
    q_t = np.array([3.0, 5.0])
    log_pi_t = q_t / tau - np.log(np.sum(np.exp(q_t / tau)))
    soft_v = np.sum(np.exp(log_pi_t) * (q_t - tau * log_pi_t))
    for discount in (0.9, 0.0):
        expected_td = 1.0 + bonus + discount * soft_v - 1.0
        td = q_losses.munchausen_td(
            Q_TM1, f32([q_tm1_target]), ACTION, REWARD, f32([discount]), Q_T, tau, alpha, clip
        )
        np.testing.assert_allclose(td, [expected_td], rtol=1e-5)
    assert bonus == pytest.approx(-0.45)


def test_munchausen_without_bonus_and_cold_temperature_is_q_learning():
    td = q_losses.munchausen_td(Q_TM1, Q_TM1, ACTION, REWARD, f32([0.9]), Q_T, 1e-3, 0.0, -1.0)
    np.testing.assert_allclose(td, [4.5], rtol=1e-4)


def test_masked_actions_do_not_break_munchausen():
    # A masked next action carries the heads' large negative value: the soft value ignores it.
    q_t_masked = f32([[3.0, -1e9]])
    td = q_losses.munchausen_td(Q_TM1, Q_TM1, ACTION, REWARD, f32([0.9]), q_t_masked, 0.03, 0.9, -1)
    assert np.isfinite(np.asarray(td)).all()


# DISTRIBUTIONAL LOSSES

ATOMS = f32([0.0, 1.0, 2.0])


def _logits(probs):
    return jnp.log(f32(probs))


def test_categorical_projection_by_hand():
    # Online distribution of the taken action 0: [0.2, 0.5, 0.3].
    logits_tm1 = _logits([[[0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]]])
    # Next state: action 0 puts all mass on atom 1, action 1 on atom 2.
    eps = 1e-12
    logits_t = _logits([[[eps, 1.0, eps], [eps, eps, 1.0]]])
    pick_0, pick_1 = f32([[1.0, 0.0]]), f32([[0.0, 1.0]])
    # r = 0.5, discount 1, next action 0: support 1.5 → half on atom 1, half on atom 2.
    loss, priority = q_losses.categorical_q_learning(
        logits_tm1, ATOMS, ACTION, f32([0.5]), f32([1.0]), logits_t, pick_0
    )
    np.testing.assert_allclose(loss, [-(0.5 * np.log(0.5) + 0.5 * np.log(0.3))], rtol=1e-5)
    np.testing.assert_allclose(priority, loss)
    # The selector decides which next distribution is used: action 1 → 2.5, clipped to atom 2.
    loss, _ = q_losses.categorical_q_learning(
        logits_tm1, ATOMS, ACTION, f32([0.5]), f32([1.0]), logits_t, pick_1
    )
    np.testing.assert_allclose(loss, [-np.log(0.3)], rtol=1e-5)
    # Terminal: the target is the reward alone (1.0 → atom 1), whatever comes next.
    loss, _ = q_losses.categorical_q_learning(
        logits_tm1, ATOMS, ACTION, f32([1.0]), f32([0.0]), logits_t, pick_1
    )
    np.testing.assert_allclose(loss, [-np.log(0.5)], rtol=1e-5)


def test_quantile_regression_by_hand():
    # Two quantiles (τ = 0.25, 0.75). Taken action 0 predicts [0, 1]; next action 0 has
    # quantiles [1, 1], action 1 has [3, 3]; r = 0, discount 1.
    quantiles_tm1 = f32([[[0.0, 1.0], [9.0, 9.0]]])
    quantiles_t = f32([[[1.0, 1.0], [3.0, 3.0]]])
    loss, _ = q_losses.quantile_q_learning(
        quantiles_tm1, ACTION, f32([0.0]), f32([1.0]), quantiles_t, f32([[1.0, 0.0]]), 0.0
    )
    # Quantile 0.25 is 1 too low for both targets: 0.25·1; quantile 0.75 is exact: 0.
    np.testing.assert_allclose(loss, [0.25], rtol=1e-6)
    # Selecting action 1 (targets 3, 3): 0.25·3 + 0.75·2.
    loss, _ = q_losses.quantile_q_learning(
        quantiles_tm1, ACTION, f32([0.0]), f32([1.0]), quantiles_t, f32([[0.0, 1.0]]), 0.0
    )
    np.testing.assert_allclose(loss, [0.25 * 3 + 0.75 * 2], rtol=1e-6)
    # Terminal with r = 0.5: targets [0.5, 0.5]: 0.25·0.5 + |0.75 − 1|·0.5.
    loss, _ = q_losses.quantile_q_learning(
        quantiles_tm1, ACTION, f32([0.5]), f32([0.0]), quantiles_t, f32([[0.0, 1.0]]), 0.0
    )
    np.testing.assert_allclose(loss, [0.25 * 0.5 + 0.25 * 0.5], rtol=1e-6)


# EXPLORATION


def test_epsilon_greedy_explores_only_valid_actions():
    import jax

    q = jnp.tile(f32([[5.0, 1.0, 0.0]]), (4000, 1))
    mask = jnp.tile(jnp.asarray([[True, False, True]]), (4000, 1))
    greedy = epsilon_greedy(jax.random.PRNGKey(0), q, mask, jnp.asarray(0.0))
    assert (np.asarray(greedy) == 0).all()
    actions = np.asarray(epsilon_greedy(jax.random.PRNGKey(1), q, mask, jnp.asarray(1.0)))
    assert not (actions == 1).any()
    assert 0.45 < (actions == 2).mean() < 0.55
