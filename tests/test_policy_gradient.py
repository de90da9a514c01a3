"""REINFORCE, DPO and V-MPO: their loss terms against values worked out by hand, a smoke run of
every system on two CPU devices, and (slow tier) learning checks on CartPole and Pendulum."""

import importlib
import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.systems.policy_gradient.pg_losses import policy_gradient_loss
from stoix.systems.ppo.ppo_losses import dpo_policy_loss
from stoix.systems.vmpo.vmpo_losses import (
    decoupled_gaussian_kl,
    policy_kls,
    project_dual,
    vmpo_policy_loss,
)
from stoix.systems.vmpo.vmpo_types import DualParams
from stoix.utils.entry import compose_config
from tests.helpers import TINY, read_metrics, runs_of

# LOSSES BY HAND


def test_dpo_loss_by_hand():
    old = jnp.log(jnp.full((4,), 0.4))
    new = jnp.log(jnp.array([0.6, 0.2, 0.2, 0.6]))  # ratios 1.5, 0.5, 0.5, 1.5
    adv = jnp.array([1.0, 1.0, -1.0, -1.0])
    loss, kl, drift_fraction = dpo_policy_loss(new, old, adv, alpha=2.0, beta=0.6)
    # A ≥ 0 uses (r − 1)·A: r=1.5 gives 0.5 − 2·tanh(0.25) > 0; r=0.5 gives −0.5 + 2·tanh(0.25)
    # < 0, which the relu zeroes. A < 0 uses log(r)·A: r=0.5 gives log 2 − 0.6·tanh(log 2 / 0.6)
    # > 0; r=1.5 gives −log 1.5 + 0.6·tanh(log 1.5 / 0.6) < 0, zeroed.
    drift = [0.5 - 2 * math.tanh(0.25), 0.0, math.log(2) - 0.6 * math.tanh(math.log(2) / 0.6), 0.0]
    objective = [1.5 - drift[0], 0.5, -0.5 - drift[2], -1.5]
    assert drift[0] == pytest.approx(0.0101623, abs=1e-6)
    assert drift[2] == pytest.approx(0.2014566, abs=1e-6)
    assert float(loss) == pytest.approx(-np.mean(objective), rel=1e-5)
    assert float(drift_fraction) == pytest.approx(0.5)
    ratios = np.array([1.5, 0.5, 0.5, 1.5])
    assert float(kl) == pytest.approx(np.mean(ratios - 1 - np.log(ratios)), rel=1e-5)


def test_dpo_gradient_is_the_policy_gradient_at_ratio_one():
    # The drift and its slope vanish at r = 1, so the first step is the plain policy gradient.
    log_prob = jnp.log(jnp.array([0.3, 0.6]))
    adv = jnp.array([2.0, -1.5])
    grad = jax.grad(lambda lp: dpo_policy_loss(lp, log_prob, adv)[0])(log_prob)
    np.testing.assert_allclose(grad, -adv / 2, rtol=1e-6)


def test_dpo_penalises_a_large_step_more_than_the_surrogate_rewards_it():
    # Far past r = 1 with A > 0 the drift grows like (r − 1)·A, cancelling the gain: the
    # gradient pushing r up shrinks from −A/n at r = 1 towards 0.
    adv = jnp.array([1.0])
    old = jnp.log(jnp.array([0.1]))
    slope = lambda p: float(  # noqa: E731
        jax.grad(lambda lp: dpo_policy_loss(lp, old, adv)[0])(jnp.log(jnp.array([p])))[0]
    )
    assert slope(0.1) == pytest.approx(-1.0, rel=1e-5)
    assert -0.2 < slope(0.9) < 0.0


def test_policy_gradient_loss_by_hand():
    log_prob = jnp.log(jnp.array([0.5, 0.25]))
    adv = jnp.array([2.0, -1.0])
    loss, kl, clipped = policy_gradient_loss(log_prob, log_prob, adv)
    assert float(loss) == pytest.approx(-(math.log(0.5) * 2 + math.log(0.25) * -1) / 2, rel=1e-6)
    assert float(kl) == 0.0 and float(clipped) == 0.0
    # The gradient is −A/n per log-probability; none flows into the advantages.
    grads = jax.grad(lambda lp, a: policy_gradient_loss(lp, log_prob, a)[0], argnums=(0, 1))(
        log_prob, adv
    )
    np.testing.assert_allclose(grads[0], -adv / 2)
    np.testing.assert_allclose(grads[1], 0.0)


def test_decoupled_gaussian_kl_by_hand():
    old_loc, old_scale = jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0])
    loc, scale = jnp.array([1.0, 1.0]), jnp.array([2.0, 2.0])
    kl_mean, kl_std = decoupled_gaussian_kl(old_loc, old_scale, loc, scale)
    # Mean part: (1 − 0)²/(2·1) + 0 = 0.5. Std part: log 2 + 1/8 − 1/2 in the first dim, 0 after.
    assert float(kl_mean) == pytest.approx(0.5)
    assert float(kl_std) == pytest.approx(math.log(2) + 1 / 8 - 1 / 2, rel=1e-6)
    # Each part is the exact KL when only that part moves.
    old = distrax.MultivariateNormalDiag(old_loc, old_scale)
    moved_mean = distrax.MultivariateNormalDiag(loc, old_scale)
    moved_std = distrax.MultivariateNormalDiag(old_loc, scale)
    assert float(kl_mean) == pytest.approx(float(old.kl_divergence(moved_mean)), rel=1e-5)
    assert float(kl_std) == pytest.approx(float(old.kl_divergence(moved_std)), rel=1e-5)
    assert [float(k) for k in policy_kls(old, moved_std)] == pytest.approx([0.0, float(kl_std)])


def test_vmpo_loss_by_hand():
    # Four samples, top half kept: weights ∝ exp(A/η) over advantages 2 and 1 with η = 1.
    log_prob = jnp.log(jnp.array([0.5, 0.25, 0.5, 0.125]))
    adv = jnp.array([2.0, 1.0, -1.0, 0.0])
    kl = jnp.array([0.02, 0.0, 0.0, 0.02])
    duals = DualParams(jnp.log(jnp.float32(1.0)), jnp.log(jnp.array([5.0])))
    loss, stats = vmpo_policy_loss(log_prob, adv, [kl], duals, 0.1, [0.01], 0.5)
    w = np.array([math.e**2, math.e, 0.0, 0.0]) / (math.e**2 + math.e)
    policy = -np.sum(w * np.log([0.5, 0.25, 0.5, 0.125]))  # weights sum to 1 over the batch
    # η·(ε_η + log mean of exp(A/η) over the kept samples).
    temperature = 1.0 * (0.1 + math.log((math.e**2 + math.e) / 2))
    kl_penalty = 5.0 * 0.01  # α·KL (mean 0.01) and α·(ε_α − KL) = 0 sum to α·ε_α here
    assert float(stats.policy_loss) == pytest.approx(policy, rel=1e-4)
    assert float(stats.temperature_loss) == pytest.approx(temperature, rel=1e-4)
    assert float(loss) == pytest.approx(policy + temperature + kl_penalty, rel=1e-4)
    assert float(stats.temperature) == pytest.approx(1.0)
    assert float(stats.alpha) == pytest.approx(5.0, rel=1e-6)
    # Here the mean KL equals its bound (0.01), so α's dual loss is flat; a KL over the bound
    # pushes α up (a negative gradient on log α).
    grad_alpha = jax.grad(
        lambda d: vmpo_policy_loss(log_prob, adv, [kl * 3], d, 0.1, [0.01], 0.5)[0]
    )(duals).log_alpha
    assert float(grad_alpha[0]) < 0.0
    assert float(project_dual(jnp.float32(-100.0))) > 0.0


# SMOKE RUNS OF EVERY SYSTEM

SYSTEMS = {
    "ff_reinforce": "stoix.systems.policy_gradient.anakin.ff_reinforce",
    "ff_reinforce_continuous": "stoix.systems.policy_gradient.anakin.ff_reinforce_continuous",
    "ff_dpo": "stoix.systems.ppo.anakin.ff_dpo",
    "ff_dpo_continuous": "stoix.systems.ppo.anakin.ff_dpo_continuous",
    "ff_vmpo": "stoix.systems.vmpo.anakin.ff_vmpo",
    "ff_vmpo_continuous": "stoix.systems.vmpo.anakin.ff_vmpo_continuous",
}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_system_smoke_on_two_devices(name, tmp_path):
    assert jax.device_count() == 2
    module = importlib.import_module(SYSTEMS[name])
    cfg = compose_config(
        name,
        [
            *TINY,
            "arch.total_timesteps=1024",
            "system.rollout_length=16",
            "system.epochs=2",
            "system.num_minibatches=2",
            "arch.num_seeds=2",
            "arch.update_batch_size=2",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    result = module.run_experiment(cfg)
    assert np.isfinite(result)
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43"]
    for run in runs.values():
        assert sorted(k for k in run if k.startswith("step_")) == ["step_0", "step_1"]
        assert len(run["step_1"]["episode_return"]) == 4
        assert len(run["absolute_metrics"]["episode_return"]) == 8
        assert run["step_1"]["step_count"] == 1024
    assert (next(tmp_path.rglob("config.yaml"))).is_file()


# LEARNING (slow tier): defaults, one seed, on two forced CPU devices. Random play scores about
# 20 on CartPole and about -1200 on Pendulum. Measured here once each (final / absolute return):
# ff_reinforce 223 / 490 (1M steps, 55 s; its late evaluations swing between ~200 and 500),
# ff_dpo 483 / 488 (1M, 71 s), ff_vmpo 496 / 498 (1M, 68 s); ff_reinforce_continuous -958 / -974
# (2M, 75 s), ff_dpo_continuous -152 / -146 (2M, 148 s), ff_vmpo_continuous -181 / -163 (2M,
# 199 s).
LEARNING = {
    "ff_reinforce": ("absolute_return", 400.0),
    "ff_dpo": ("final_return", 400.0),
    "ff_vmpo": ("final_return", 400.0),
    # One gradient step per rollout learns Pendulum slowly: only clearly better than random.
    "ff_reinforce_continuous": ("absolute_return", -1100.0),
    "ff_dpo_continuous": ("absolute_return", -250.0),
    "ff_vmpo_continuous": ("absolute_return", -250.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LEARNING))
def test_system_learns_with_default_config(name, tmp_path):
    from stoix.runners.anakin import run_anakin_measured

    module = importlib.import_module(SYSTEMS[name])
    cfg = compose_config(
        name,
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "arch.num_eval_episodes=32"],
    )
    result = run_anakin_measured(cfg, module.SYSTEM)
    metric, threshold = LEARNING[name]
    assert getattr(result, metric) >= threshold, result
