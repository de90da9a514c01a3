"""MPO: its loss terms against values worked out by hand, config checks, a smoke run of both
systems on two CPU devices, and (slow) learning on CartPole and Pendulum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from stoix.errors import ConfigError
from stoix.runners.anakin import run_anakin_measured
from stoix.systems.mpo.anakin import ff_mpo, ff_mpo_continuous
from stoix.systems.mpo.mpo_losses import (
    MPOEpsilons,
    categorical_expected_value,
    categorical_mpo_loss,
    gaussian_mpo_loss,
    positive,
)
from stoix.systems.mpo.mpo_types import DualParams
from stoix.utils.entry import compose_config
from tests.helpers import TINY, read_metrics, runs_of


def inverse_softplus(x: float) -> float:
    return float(np.log(np.expm1(x)))


def duals(temperature: float, alpha: float, shape=(1, 1)) -> DualParams:
    return DualParams(
        jnp.asarray(inverse_softplus(temperature), jnp.float32),
        jnp.full(shape, inverse_softplus(alpha), jnp.float32),
    )


def test_categorical_expected_value_by_hand():
    logits = jnp.log(jnp.array([[0.25, 0.75], [0.5, 0.5]]))
    q = jnp.array([[2.0, 4.0], [-1.0, 3.0]])
    np.testing.assert_allclose(categorical_expected_value(logits, q), [3.5, 1.0], rtol=1e-6)


def test_categorical_expected_value_ignores_masked_actions():
    # A masked action: float32-min logit (probability 0) and INVALID_ACTION_VALUE as its Q.
    logits = jnp.array([[0.0, 0.0, jnp.finfo(jnp.float32).min]])
    q = jnp.array([[1.0, 3.0, -1e9]])
    np.testing.assert_allclose(categorical_expected_value(logits, q), [2.0], rtol=1e-6)


def test_categorical_mpo_loss_by_hand():
    # One state, three actions; the online policy equals the target one, so the KL is 0.
    prior = np.array([0.2, 0.3, 0.5])
    q = np.array([1.0, 2.0, 0.5])
    eta, alpha, eps, eps_policy = 0.5, 2.0, 0.1, 0.01
    logits = jnp.log(jnp.asarray(prior, jnp.float32))[None]
    loss, info = categorical_mpo_loss(
        logits,
        logits,
        jnp.asarray(q, jnp.float32)[None],
        duals(eta, alpha),
        MPOEpsilons(eps, eps_policy, 0.0),
    )
    # E-step: q(a) ∝ π_target(a) e^{Q(a)/η}; dual η ε + η log Σ_a π_target(a) e^{Q(a)/η}.
    weights = prior * np.exp(q / eta)
    weights /= weights.sum()
    temperature_loss = eta * eps + eta * logsumexp(q / eta, b=prior)
    policy_loss = -np.sum(weights * np.log(prior))
    # M-step: α · KL (0 here) plus the multiplier's dual α (ε − KL).
    expected = policy_loss + temperature_loss + alpha * eps_policy
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(info.policy_loss) == pytest.approx(policy_loss, rel=1e-5)
    assert float(info.temperature) == pytest.approx(eta, rel=1e-5)
    assert float(info.kl) == pytest.approx(0.0, abs=1e-6)


def test_categorical_mpo_temperature_gradient_is_the_duals():
    # d/dη [η ε + η log Σ π e^{Q/η}] = ε + log Σ π e^{Q/η} − Σ q(a) Q(a)/η, times dη/dlog η.
    prior = np.array([0.6, 0.4])
    q = np.array([0.0, 1.0])
    eta, eps = 0.7, 0.1
    logits = jnp.log(jnp.asarray(prior, jnp.float32))[None]

    def loss(log_temperature):
        d = DualParams(log_temperature, jnp.zeros((1, 1), jnp.float32))
        return categorical_mpo_loss(
            logits, logits, jnp.asarray(q, jnp.float32)[None], d, MPOEpsilons(eps, 0.01, 0.0)
        )[0]

    log_temperature = jnp.asarray(inverse_softplus(eta), jnp.float32)
    weights = prior * np.exp(q / eta)
    weights /= weights.sum()
    d_eta = eps + logsumexp(q / eta, b=prior) - np.sum(weights * q) / eta
    d_log = d_eta * float(jax.nn.sigmoid(log_temperature))
    assert float(jax.grad(loss)(log_temperature)) == pytest.approx(d_log, rel=1e-4)


def test_categorical_mpo_loss_is_finite_with_masked_actions():
    minimum = jnp.finfo(jnp.float32).min
    logits = jnp.array([[0.3, -0.2, minimum]])
    q = jnp.array([[1.0, 2.0, -1e9]])
    d = duals(0.01, 1.0)

    def loss(online, d):
        return categorical_mpo_loss(online, logits, q, d, MPOEpsilons(0.1, 0.01, 0.0))[0]

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(logits + 0.1, d)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_gaussian_mpo_loss_by_hand():
    # Two states, one action dimension, three samples each; online == target, so KLs are 0.
    mean = np.array([[0.0], [1.0]])
    std = np.array([[1.0], [0.5]])
    actions = np.array([[[0.5], [1.0]], [[-1.0], [2.0]], [[0.0], [0.0]]])  # [N=3, B=2, A=1]
    q = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 1.0]])  # [N, B]
    eta, alpha, eps, eps_mean, eps_std = 2.0, 1.5, 0.1, 0.01, 1e-4

    def f32(x):
        return jnp.asarray(x, jnp.float32)

    loss, info = gaussian_mpo_loss(
        f32(mean),
        f32(std),
        f32(mean),
        f32(std),
        f32(actions),
        f32(q),
        duals(eta, alpha, (2, 1)),
        MPOEpsilons(eps, eps_mean, eps_std),
    )
    weights = np.exp(q / eta - logsumexp(q / eta, axis=0, keepdims=True))
    temperature_loss = eta * eps + eta * (logsumexp(q / eta, axis=0) - np.log(3))
    log_normal = -0.5 * ((actions - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    # The decoupled policies both equal the target here: twice the log-likelihood.
    policy_loss = -np.sum(weights * 2 * log_normal[..., 0], axis=0)
    expected = np.mean(policy_loss + temperature_loss + alpha * (eps_mean + eps_std))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(info.kl) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_mpo_decouples_mean_and_stddev_kls():
    # Only the online mean moved: the mean KL is (Δμ)²/(2σ_target²), the std KL stays 0, and
    # the std multipliers get no gradient from the KL term.
    target_mean, target_std = jnp.zeros((1, 2)), jnp.ones((1, 2))
    online_mean = jnp.array([[0.2, -0.4]])
    actions = jnp.zeros((4, 1, 2))
    q = jnp.zeros((4, 1))
    _, info = gaussian_mpo_loss(
        online_mean,
        target_std,
        target_mean,
        target_std,
        actions,
        q,
        duals(1.0, 1.0, (2, 2)),
        MPOEpsilons(0.1, 0.01, 1e-4),
    )
    assert float(info.kl) == pytest.approx((0.2**2 + 0.4**2) / 2, rel=1e-5)


def test_dual_projection_is_positive():
    assert float(positive(jnp.asarray(-50.0))) > 0.0
    assert float(positive(jnp.asarray(inverse_softplus(3.0)))) == pytest.approx(3.0, rel=1e-5)


# CONFIG CHECKS


@pytest.mark.parametrize(
    "config, system, overrides, match",
    [
        ("ff_mpo", ff_mpo, ["system.batch_size=3"], "system.batch_size=3 is not divisible"),
        ("ff_mpo", ff_mpo, ["system.buffer_size=64"], "system.buffer_size=64"),
        ("ff_mpo", ff_mpo, ["system.warmup_steps=2"], "system.warmup_steps=2"),
        ("ff_mpo", ff_mpo, ["system.tau=2"], "system.tau"),
        ("ff_mpo_continuous", ff_mpo_continuous, ["system.num_samples=0"], "system.num_samples"),
        (
            "ff_mpo_continuous",
            ff_mpo_continuous,
            ["network.actor_network.action_head._target_=stoix.networks.heads.TanhNormalHead"],
            "network.actor_network.action_head",
        ),
        ("ff_mpo", ff_mpo, ["env=gymnax/pendulum"], "handles only discrete actions"),
    ],
)
def test_bad_mpo_configs_fail_with_one_line(config, system, overrides, match, tmp_path):
    cfg = compose_config(config, [*TINY, f"logger.base_exp_path={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=match):
        system.run_experiment(cfg)
    assert not any(tmp_path.iterdir())


# SMOKE: both systems, two devices, two seeds, an update batch of two


@pytest.mark.parametrize(
    "config, system, extra",
    [
        ("ff_mpo", ff_mpo, []),
        ("ff_mpo_continuous", ff_mpo_continuous, ["system.num_samples=4"]),
    ],
    ids=["ff_mpo", "ff_mpo_continuous"],
)
def test_mpo_smoke_on_two_devices(config, system, extra, tmp_path):
    cfg = compose_config(
        config,
        [
            *TINY,
            "arch.total_timesteps=1024",
            "system.rollout_length=8",
            "system.warmup_steps=8",
            "system.batch_size=16",
            "system.buffer_size=512",
            "system.gradient_steps_per_update=2",
            "arch.num_seeds=2",
            "arch.update_batch_size=2",
            f"logger.base_exp_path={tmp_path}",
            *extra,
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
def test_mpo_learns_cartpole_with_default_config(tmp_path):
    cfg = compose_config(
        "ff_mpo",
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "arch.num_eval_episodes=32"],
    )
    result = run_anakin_measured(cfg, ff_mpo.SYSTEM)
    # Random play scores about 20; measured here: 500 (absolute 493) at 3e5 steps.
    assert result.absolute_return >= 400, result
    assert result.final_return >= 400, result


@pytest.mark.slow
def test_mpo_continuous_learns_pendulum_with_default_config(tmp_path):
    cfg = compose_config(
        "ff_mpo_continuous",
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "arch.num_eval_episodes=32"],
    )
    result = run_anakin_measured(cfg, ff_mpo_continuous.SYSTEM)
    # A random policy scores about -1200; measured here: -152 (absolute -147) at 1e5 steps.
    assert result.absolute_return >= -250, result
