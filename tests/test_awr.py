"""AWR: its weights and TD(λ) targets against values worked out by hand, config checks, a smoke
run of both systems on two CPU devices, and (slow) learning on CartPole and Pendulum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.base_types import Observation, Transition
from stoix.errors import ConfigError
from stoix.runners.anakin import run_anakin_measured
from stoix.systems.awr.anakin import ff_awr, ff_awr_continuous
from stoix.systems.awr.awr_base import AWRHyperparameters, Networks, td_lambda_targets
from stoix.systems.awr.awr_losses import advantage_weights, awr_policy_loss
from stoix.utils.entry import compose_config
from tests.helpers import TINY, read_metrics, runs_of


def test_advantage_weights_by_hand():
    advantages = jnp.array([0.0, 1.0, -2.0, 10.0, 1e4])
    weights = advantage_weights(advantages, beta=0.5, max_weight=20.0)
    # exp(A/β) = [1, e², e⁻⁴, e²⁰ → clipped, overflow → clipped]
    np.testing.assert_allclose(weights, [1.0, np.exp(2.0), np.exp(-4.0), 20.0, 20.0], rtol=1e-6)


def test_awr_policy_loss_by_hand_and_weights_carry_no_gradient():
    log_probs = jnp.log(jnp.array([0.5, 0.25]))
    advantages = jnp.array([1.0, 0.0])
    loss, weights = awr_policy_loss(log_probs, advantages, beta=1.0, max_weight=20.0)
    expected = -(np.e * np.log(0.5) + 1.0 * np.log(0.25)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(weights, [np.e, 1.0], rtol=1e-6)
    # d loss / d log π = −w / n; d loss / d A = 0 (the weights are constants).
    grad_lp = jax.grad(lambda lp: awr_policy_loss(lp, advantages, 1.0, 20.0)[0])(log_probs)
    np.testing.assert_allclose(grad_lp, [-np.e / 2, -0.5], rtol=1e-6)
    grad_adv = jax.grad(lambda a: awr_policy_loss(log_probs, a, 1.0, 20.0)[0])(advantages)
    np.testing.assert_allclose(grad_adv, [0.0, 0.0])


def obs(values):
    """Observations whose first feature the fake critic reads as V(s)."""
    view = jnp.asarray(values, jnp.float32)[..., None]
    return Observation(view, jnp.ones(view.shape[:-1] + (2,), bool), jnp.zeros(view.shape[:-1]))


def test_td_lambda_targets_by_hand_with_termination_and_truncation():
    # One sequence of 4 steps: step 1 terminates, step 2 starts a new episode that is truncated
    # at step 3 (the sequence's last step). V(s) is read from the observation.
    networks = Networks(
        actor=None,
        critic_apply=lambda params, o: o.agent_view[..., 0],
        actor_optimiser=None,
        critic_optimiser=None,
        buffer=None,
    )
    hp = AWRHyperparameters(
        gamma=0.9,
        td_lambda=0.5,
        reward_scale=1.0,
        beta=1.0,
        max_weight=20.0,
        standardise_advantages=False,
        normalise_observations=False,
    )
    values = np.array([1.0, 2.0, 3.0, 4.0])
    next_values = np.array([2.0, 5.0, 4.0, 6.0])  # after step 1: terminal; after 3: final obs
    rewards = np.array([1.0, 1.0, 0.5, 2.0])
    sequence = Transition(
        observation=obs(values[None]),
        action=jnp.zeros((1, 4), jnp.int32),
        reward=jnp.asarray(rewards[None], jnp.float32),
        terminated=jnp.array([[False, True, False, False]]),
        episode_end=jnp.array([[False, True, False, True]]),
        next_observation=obs(next_values[None]),
    )
    advantages, targets = td_lambda_targets(networks, hp, None, sequence)
    gamma, lam = 0.9, 0.5
    # Step 3 (truncated): bootstraps from its final observation, no trace beyond.
    g3 = 2.0 + gamma * 6.0
    # Step 2: G = r + γ[(1 − λ) V(s') + λ G3].
    g2 = 0.5 + gamma * ((1 - lam) * 4.0 + lam * g3)
    # Step 1 (terminated): just the reward.
    g1 = 1.0
    # Step 0: the trace mixes with step 1's return.
    g0 = 1.0 + gamma * ((1 - lam) * 2.0 + lam * g1)
    np.testing.assert_allclose(targets[0], [g0, g1, g2, g3], rtol=1e-6)
    np.testing.assert_allclose(advantages[0], np.array([g0, g1, g2, g3]) - values, rtol=1e-6)


# CONFIG CHECKS


@pytest.mark.parametrize(
    "config, system, overrides, match",
    [
        ("ff_awr", ff_awr, ["system.batch_size=3"], "system.batch_size=3 is not divisible"),
        ("ff_awr", ff_awr, ["system.buffer_size=64"], "system.buffer_size=64"),
        ("ff_awr", ff_awr, ["system.warmup_steps=2"], "system.warmup_steps=2"),
        ("ff_awr", ff_awr, ["system.beta=0"], "system.beta=0 must be positive"),
        ("ff_awr_continuous", ff_awr_continuous, ["system.td_lambda=2"], "system.td_lambda"),
        ("ff_awr_continuous", ff_awr_continuous, ["env=gymnax/cartpole"], "continuous actions"),
    ],
)
def test_bad_awr_configs_fail_with_one_line(config, system, overrides, match, tmp_path):
    cfg = compose_config(config, [*TINY, f"logger.base_exp_path={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=match):
        system.run_experiment(cfg)
    assert not any(tmp_path.iterdir())


# SMOKE: both systems, two devices, two seeds, an update batch of two


@pytest.mark.parametrize(
    "config, system",
    [("ff_awr", ff_awr), ("ff_awr_continuous", ff_awr_continuous)],
    ids=["ff_awr", "ff_awr_continuous"],
)
def test_awr_smoke_on_two_devices(config, system, tmp_path):
    cfg = compose_config(
        config,
        [
            *TINY,
            "arch.total_timesteps=1024",
            "system.rollout_length=8",
            "system.warmup_steps=8",
            "system.sequence_length=4",
            "system.batch_size=8",
            "system.buffer_size=512",
            "system.gradient_steps_per_update=2",
            "arch.num_seeds=2",
            "arch.update_batch_size=2",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    result = system.run_experiment(cfg)
    assert np.isfinite(result)
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43"]
    for run in runs.values():
        assert sorted(k for k in run if k.startswith("step_")) == ["step_0", "step_1"]
        assert run["step_1"]["step_count"] == 1024
        assert len(run["step_1"]["episode_return"]) == 4
        assert len(run["absolute_metrics"]["episode_return"]) == 8


# LEARNING


@pytest.mark.slow
def test_awr_learns_cartpole_with_default_config(tmp_path):
    cfg = compose_config(
        "ff_awr",
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "arch.num_eval_episodes=32"],
    )
    result = run_anakin_measured(cfg, ff_awr.SYSTEM)
    # Random play scores about 20; measured here: 500 (absolute 495) at 2e5 steps.
    assert result.absolute_return >= 400, result
    assert result.final_return >= 400, result


@pytest.mark.slow
def test_awr_continuous_learns_pendulum_with_default_config(tmp_path):
    cfg = compose_config(
        "ff_awr_continuous",
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "arch.num_eval_episodes=32"],
    )
    result = run_anakin_measured(cfg, ff_awr_continuous.SYSTEM)
    # A random policy scores about -1200; measured here: -184 (absolute -176) at 2e5 steps.
    assert result.absolute_return >= -250, result
