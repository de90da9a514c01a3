"""The replay actor-critics (DDPG, TD3, D4PG, SAC, discrete SAC): their losses by hand, TD3's
delayed actor, a two-device smoke run of each, bad configs, and SAC learning Pendulum."""

import importlib

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.errors import ConfigError
from stoix.runners.anakin import run_anakin_measured
from stoix.system_api import BuildContext
from stoix.systems.ddpg.anakin import ff_d4pg, ff_td3
from stoix.systems.ddpg.ddpg_losses import (
    categorical_critic_loss,
    categorical_mean,
    smoothed_target_action,
    twin_critic_loss,
)
from stoix.systems.sac.anakin import ff_sac
from stoix.systems.sac.sac_losses import (
    categorical_expectation,
    policy_loss,
    soft_value,
    temperature_loss,
)
from stoix.utils.config import make_run_plan
from stoix.utils.entry import compose_config
from stoix.wrappers.env_factory import make_env
from tests.helpers import TINY, read_metrics, runs_of

SMALL_NETWORKS = (
    "network.actor_network.pre_torso.layer_sizes=[16]",
    "network.critic_network.pre_torso.layer_sizes=[16]",
)
TINY_REPLAY = (
    "system.rollout_length=8",
    "system.warmup_steps=8",
    "system.batch_size=16",
    "system.buffer_size=512",
)


# LOSSES BY HAND


def test_twin_critic_loss_regresses_every_critic_toward_the_smaller_target():
    q_tm1 = jnp.array([[1.0, 2.0], [3.0, 0.0]])  # [K=2, B=2]
    next_q = jnp.array([[1.0, 5.0], [2.0, 4.0]])  # min over critics: [1, 4]
    reward, discount = jnp.array([0.0, 1.0]), jnp.array([0.5, 0.0])  # targets [0.5, 1]
    # critic 0: (0.25 + 1) / 2 = 0.625; critic 1: (6.25 + 1) / 2 = 3.625; half their sum.
    loss = twin_critic_loss(q_tm1, next_q, reward, discount)
    np.testing.assert_allclose(loss, 0.5 * (0.625 + 3.625), rtol=1e-6)
    # No gradient reaches the target side.
    grad = jax.grad(lambda n: twin_critic_loss(q_tm1, n, reward, discount))(next_q)
    np.testing.assert_array_equal(grad, 0.0)


def test_categorical_critic_loss_projects_the_shifted_target_between_atoms():
    atoms = jnp.array([0.0, 1.0, 2.0])
    next_logits = jnp.array([[-1e4, 0.0, -1e4]])  # all mass on z = 1
    logits = jnp.array([[0.3, -0.2, 0.5]])
    # r + γ z = 0.5 + 1 = 1.5 splits evenly between atoms 1 and 2.
    loss = categorical_critic_loss(logits, next_logits, atoms, jnp.array([0.5]), jnp.array([1.0]))
    log_p = jax.nn.log_softmax(logits[0])
    np.testing.assert_allclose(loss, -(0.5 * log_p[1] + 0.5 * log_p[2]), rtol=1e-5)
    np.testing.assert_allclose(
        categorical_mean(jnp.log(jnp.array([0.25, 0.25, 0.5])), atoms), 1.25, rtol=1e-6
    )


def test_target_smoothing_noise_is_clipped_and_actions_stay_in_bounds():
    low, high = jnp.array([-2.0, 0.0]), jnp.array([2.0, 1.0])  # half ranges 2 and 0.5
    action = jnp.tile(jnp.array([[0.0, 0.5]]), (1000, 1))
    smoothed = smoothed_target_action(action, jax.random.PRNGKey(0), 10.0, 0.25, low, high)
    deviation = np.abs(np.asarray(smoothed - action))
    assert deviation[:, 0].max() == pytest.approx(0.25 * 2.0)
    assert deviation[:, 1].max() == pytest.approx(0.25 * 0.5)
    edge = smoothed_target_action(
        jnp.array([[2.0, 1.0]]), jax.random.PRNGKey(1), 1.0, 1.0, low, high
    )
    assert (edge <= high).all() and (edge >= low).all()
    unchanged = smoothed_target_action(action, jax.random.PRNGKey(2), 0.0, 0.5, low, high)
    np.testing.assert_array_equal(unchanged, action)


def test_discrete_sac_expectations_are_exact_and_ignore_masked_actions():
    logits = jnp.log(jnp.array([[0.25, 0.75, 1.0]]))
    masked = jnp.where(jnp.array([True, True, False]), logits, jnp.finfo(jnp.float32).min)
    dist = distrax.Categorical(logits=masked)
    q = jnp.array([[1.0, 2.0, -1e9]])
    expectation = categorical_expectation(dist, q)
    np.testing.assert_allclose(expectation.q, [0.25 * 1.0 + 0.75 * 2.0], rtol=1e-6)
    expected_log_prob = 0.25 * np.log(0.25) + 0.75 * np.log(0.75)
    np.testing.assert_allclose(expectation.log_prob, [expected_log_prob], rtol=1e-5)
    # V = E[Q] − α E[log π]; the actor loss is its negation.
    alpha = jnp.asarray(0.5)
    value = soft_value(expectation, alpha)
    np.testing.assert_allclose(value, [1.75 - 0.5 * expected_log_prob], rtol=1e-6)
    np.testing.assert_allclose(policy_loss(expectation, alpha), -value[0], rtol=1e-6)


def test_temperature_rises_when_entropy_is_below_target_and_falls_above():
    below = jax.grad(temperature_loss)(jnp.asarray(0.0), jnp.array([0.4]), 0.2)  # entropy -0.4
    above = jax.grad(temperature_loss)(jnp.asarray(0.0), jnp.array([-1.0]), 0.2)  # entropy 1.0
    assert float(below) == pytest.approx(-0.6)  # descent raises log α
    assert float(above) == pytest.approx(0.8)


# TD3'S DELAYED ACTOR


def two_updates_of_one_replica(module, config):
    cfg = compose_config(
        config,
        [*TINY, *SMALL_NETWORKS, *TINY_REPLAY, "system.gradient_steps_per_update=1"],
    )
    env = make_env(cfg.env)
    parts = module.SYSTEM.build(BuildContext(cfg, env, make_run_plan(cfg, 1)))
    init = jax.jit(lambda key: parts.init_state(parts.init_shared(key, {}), key))
    # The runner's replica axes, each of size one, so the gradient pmean has its names.
    update = jax.vmap(jax.vmap(parts.update_step, axis_name="batch"), axis_name="device")

    def two_updates(state):
        def one(state, _):
            state = update(state)[0]
            return state, state

        return jax.lax.scan(one, state, None, length=2)[1]

    state = jax.tree.map(lambda x: x[None, None], init(jax.random.PRNGKey(0)))
    states = jax.jit(two_updates)(state)
    return [jax.tree.map(lambda x: x[0, 0], state)] + [
        jax.tree.map(lambda x, i=i: x[i, 0, 0], states) for i in range(2)
    ]


def changed(before, after) -> bool:
    pairs = zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    return any(not np.array_equal(a, b) for a, b in pairs)


def test_td3_moves_actor_and_targets_only_every_second_critic_step():
    states = two_updates_of_one_replica(ff_td3, "ff_td3")
    first, second = states[1].params, states[2].params
    assert changed(states[0].params.critic, first.critic)
    assert not changed(states[0].params.actor, first.actor)
    assert not changed(states[0].params.target_critic, first.target_critic)
    assert changed(first.actor, second.actor)
    assert changed(first.target_actor, second.target_actor)
    assert changed(first.target_critic, second.target_critic)
    # The two critics start apart (their own keys).
    assert any(not np.allclose(x[0], x[1]) for x in jax.tree.leaves(first.critic))


# EVERY SYSTEM END TO END ON TWO DEVICES

SMOKE = [
    ("ddpg", "ff_ddpg", ["system.normalise_observations=True"]),
    ("ddpg", "ff_td3", []),
    ("ddpg", "ff_d4pg", ["system.n_step=3"]),
    ("sac", "ff_sac", ["system.normalise_observations=True"]),
    ("sac", "ff_sac_discrete", []),
]


@pytest.mark.parametrize("family, config, extra", SMOKE, ids=[s[1] for s in SMOKE])
def test_smoke_on_two_devices(family, config, extra, tmp_path):
    module = importlib.import_module(f"stoix.systems.{family}.anakin.{config}")
    cfg = compose_config(
        config,
        [
            *TINY,
            *SMALL_NETWORKS,
            *TINY_REPLAY,
            "system.gradient_steps_per_update=2",
            "arch.total_timesteps=1024",
            "arch.num_seeds=2",
            "arch.update_batch_size=2",
            f"logger.base_exp_path={tmp_path}",
            *extra,
        ],
    )
    assert np.isfinite(module.run_experiment(cfg))
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43"]
    for run in runs.values():
        assert run["step_1"]["step_count"] == 1024
        assert len(run["absolute_metrics"]["episode_return"]) == 8
        assert np.isfinite(run["step_1"]["episode_return"]).all()


@pytest.mark.parametrize(
    "module, config, overrides, match",
    [
        (ff_d4pg, "ff_d4pg", ["system.v_min=10", "system.v_max=0"], "system.v_min=10"),
        (ff_d4pg, "ff_d4pg", ["system.num_critics=2"], "system.num_critics=2"),
        (ff_td3, "ff_td3", ["system.policy_delay=0"], "system.policy_delay"),
        (ff_td3, "ff_td3", ["system.batch_size=7"], "system.batch_size=7 is not divisible"),
        (ff_sac, "ff_sac", ["system.init_alpha=0"], "system.init_alpha=0 must be positive"),
        (ff_sac, "ff_sac", ["system.warmup_steps=0", "system.n_step=2"], "system.warmup_steps"),
    ],
)
def test_bad_config_is_one_clear_error(module, config, overrides, match, tmp_path):
    cfg = compose_config(config, [*TINY, f"logger.base_exp_path={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=match):
        module.run_experiment(cfg)
    assert not any(tmp_path.iterdir())


# LEARNING


def test_sac_learns_pendulum_swing_up(tmp_path):
    # 3e4 steps on two forced CPU devices with 128-wide networks (~90 s on 2 cores). A random
    # or broken policy scores about -1200; measured here: -157 final, -156 absolute.
    cfg = compose_config(
        "ff_sac",
        [
            f"logger.base_exp_path={tmp_path}",
            "logger.use_tb=False",
            "logger.use_console=False",
            "arch.total_timesteps=3e4",
            "arch.num_evaluation=6",
            "system.batch_size=128",
            "network.actor_network.pre_torso.layer_sizes=[128,128]",
            "network.critic_network.pre_torso.layer_sizes=[128,128]",
        ],
    )
    result = run_anakin_measured(cfg, ff_sac.SYSTEM)
    assert result.absolute_return >= -250, result


# Slow tier: each system at its defaults (`make bench` also tables them in docs/benchmarks.md).
# Random play scores about -1200 on Pendulum and about 20 on CartPole. brax inverted_pendulum
# is not here yet: at 5e4 steps TD3 and SAC balance for only ~100 of its 1000 steps
# (docs/benchmarks.md).
DEFAULT_RUNS = [
    ("ddpg", "ff_ddpg", [], -250),
    ("ddpg", "ff_td3", [], -250),
    ("ddpg", "ff_d4pg", [], -250),
    ("sac", "ff_sac", [], -250),
    ("sac", "ff_sac_discrete", [], 450),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, config, extra, threshold",
    DEFAULT_RUNS,
    ids=[r[1] for r in DEFAULT_RUNS],
)
def test_learns_at_default_config(family, config, extra, threshold, tmp_path):
    module = importlib.import_module(f"stoix.systems.{family}.anakin.{config}")
    cfg = compose_config(
        config,
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "logger.use_console=False"]
        + extra,
    )
    result = run_anakin_measured(cfg, module.SYSTEM)
    assert result.absolute_return >= threshold, result
