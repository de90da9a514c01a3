"""Continuous PQN: its Q(λ) targets by hand, a two-device run, the refusal of discrete envs, and
learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from stoix.base_types import ActorCriticParams, Observation
from stoix.errors import ConfigError
from stoix.runners.anakin import run_anakin_measured
from stoix.systems.q_learning.anakin import ff_pqn_continuous as pqnc
from stoix.utils.entry import compose_config
from tests.helpers import TINY, read_metrics, run_script, runs_of

SCRIPT = "stoix/systems/q_learning/anakin/ff_pqn_continuous.py"
SMALL_NETWORKS = (
    "network.actor_network.pre_torso.layer_sizes=[16]",
    "network.critic_network.pre_torso.layer_sizes=[16]",
)


def observations(values) -> Observation:
    view = jnp.asarray(values, jnp.float32)[..., None]
    return Observation(view, jnp.ones(view.shape, bool), jnp.zeros(view.shape[:-1], jnp.int32))


def test_targets_bootstrap_from_min_critic_at_true_next_observation():
    # π(s) = s + 0.5 and Q_i(s, a) = w_i·s + a with w = (1, −1), so at s' the two critics give
    # 2s' + 0.5 and 0.5: the minimum is Q2 for s' ≥ 0 and Q1 for s' < 0.
    networks = pqnc.Networks(
        actor_apply=lambda p, obs: obs.agent_view + p,
        critic_apply=lambda p, obs, a: p * obs.agent_view[..., 0] + a[..., 0],
        actor_optimiser=optax.identity(),
        critic_optimiser=optax.identity(),
        action_low=jnp.array([-1.0]),
        action_high=jnp.array([1.0]),
    )
    hp = pqnc.ContinuousPQNHyperparameters(
        gamma=0.9,
        q_lambda=0.5,
        rollout_length=3,
        epochs=1,
        num_minibatches=1,
        exploration_noise_start=0.0,
        exploration_noise_end=0.0,
        exploration_noise_decay_steps=1,
        reward_scale=2.0,
        normalise_observations=False,
    )
    params = ActorCriticParams(jnp.float32(0.5), jnp.array([1.0, -1.0]))
    # Env 0 is truncated after step 1, env 1 terminates there. Both envs' next step starts a
    # new episode whose (auto-reset) observation 100 must never be bootstrapped from.
    next_values = [[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0]]
    traj = pqnc.ContinuousPQNTransition(
        observation=observations([[0.0, 0.0], [0.0, 0.0], [100.0, 100.0]]),
        action=jnp.zeros((3, 2, 1)),
        reward=jnp.array([[0.5, 0.5], [1.0, 1.0], [1.5, 1.5]]),  # doubled by reward_scale
        discount=jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
        episode_end=jnp.array([[False, False], [True, True], [False, False]]),
        next_observation=observations(next_values),
        episode_return=jnp.zeros((3, 2)),
        episode_length=jnp.zeros((3, 2), jnp.int32),
    )
    targets = np.asarray(pqnc.critic_targets(networks, hp, params, traj))
    # min Q at s' = 1, −1, 2: 0.5 (Q2), −1.5 (Q1), 0.5 (Q2).
    last = 3.0 + 0.9 * 0.5
    truncated = 2.0 + 0.9 * -1.5  # the trace stops but the bootstrap stays
    terminated = 2.0  # no bootstrap at all
    expected = [
        [1.0 + 0.9 * (0.5 * 0.5 + 0.5 * truncated), 1.0 + 0.9 * (0.5 * 0.5 + 0.5 * terminated)],
        [truncated, terminated],
        [last, last],
    ]
    np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_one_update_moves_actor_and_both_critics():
    cfg = compose_config(
        "ff_pqn_continuous",
        [
            *TINY,
            *SMALL_NETWORKS,
            "env=gymnax/pendulum",
            "arch.total_timesteps=4096",
            "system.rollout_length=8",
            "system.num_minibatches=2",
        ],
    )
    from stoix.system_api import BuildContext
    from stoix.utils.config import make_run_plan
    from stoix.wrappers.env_factory import make_env

    env = make_env(cfg.env)
    parts = pqnc.build(BuildContext(cfg, env, make_run_plan(cfg, 1)))
    state = parts.init_state(parts.init_shared(jax.random.PRNGKey(0), {}), jax.random.PRNGKey(1))
    # The runner's replica axes, each of size one, so the gradient pmean has its names.
    update = jax.vmap(jax.vmap(parts.update_step, axis_name="batch"), axis_name="device")
    new_state, metrics = jax.jit(update)(jax.tree.map(lambda x: x[None, None], state))
    new_state = jax.tree.map(lambda x: x[0, 0], new_state)
    critics = state.params.critic_params
    # The two critics start apart (their own keys) and both learn.
    assert any(not np.allclose(leaf[0], leaf[1]) for leaf in jax.tree.leaves(critics))
    actor_change = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))),
        state.params.actor_params,
        new_state.params.actor_params,
    )
    assert max(jax.tree.leaves(actor_change)) > 0.0
    # Per critic: the largest change over its leaves, both nonzero.
    critic_change = jax.tree.map(
        lambda a, b: np.max(np.abs(a - b).reshape(2, -1), axis=1),
        state.params.critic_params,
        new_state.params.critic_params,
    )
    assert (np.max(np.stack(jax.tree.leaves(critic_change)), axis=0) > 0.0).all()
    assert float(new_state.obs_stats.count) == 8 * 8  # envs × rollout steps
    assert np.isfinite(float(metrics.loss_info.critic_loss[0, 0]))


def test_two_device_two_seed_run_writes_json_metrics(tmp_path):
    result = run_script(
        SCRIPT,
        [
            *TINY,
            *SMALL_NETWORKS,
            "env=gymnax/pendulum",
            "arch.total_timesteps=2048",
            "arch.num_seeds=2",
            "system.rollout_length=8",
            "system.num_minibatches=2",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43"]
    for run in runs.values():
        assert np.isfinite(run["step_1"]["episode_return"]).all()


def test_discrete_env_is_refused_in_one_line(tmp_path):
    result = run_script(SCRIPT, ["env=gymnax/cartpole", f"logger.base_exp_path={tmp_path}"])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "stoix: error: env=gymnax/cartpole has discrete actions but ff_pqn_continuous handles "
        "only continuous actions"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["system.num_minibatches=3"], "system.num_minibatches=3"),
        (["system.q_lambda=1.5"], "system.q_lambda"),
        (["system.exploration_noise_start=-0.1"], "system.exploration_noise_start"),
        (["system.exploration_noise_decay_fraction=2"], "system.exploration_noise_decay_fraction"),
        (["system.max_grad_norm=0"], "system.max_grad_norm=0 must be positive"),
        (["system.optimiser=sgd"], "system.optimiser=sgd must be one of adam, radam"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, match, tmp_path):
    cfg = compose_config(
        "ff_pqn_continuous", [*TINY, f"logger.base_exp_path={tmp_path}", *overrides]
    )
    with pytest.raises(ConfigError, match=match):
        pqnc.run_experiment(cfg)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_learns_pendulum_swing_up(tmp_path):
    # The default run's continuous learning check is SAC's (tests/test_off_policy.py); this one
    # moved to the slow tier to keep the default run under 20 minutes.
    # gymnax Pendulum at the system's defaults, 2e5 steps on two forced CPU devices (~60 s).
    # A random or non-learning policy scores about -1200; measured here: about -200.
    cfg = compose_config(
        "ff_pqn_continuous",
        [
            f"logger.base_exp_path={tmp_path}",
            "logger.use_tb=False",
            "logger.use_console=False",
            "env=gymnax/pendulum",
            "arch.total_timesteps=2e5",
        ],
    )
    result = run_anakin_measured(cfg, pqnc.SYSTEM)
    assert result.absolute_return >= -400, result


@pytest.mark.slow
def test_learns_brax_inverted_pendulum_with_default_config(tmp_path):
    # The README's default run; the maximum is 1000 (balanced for the whole episode).
    cfg = compose_config(
        "ff_pqn_continuous",
        [f"logger.base_exp_path={tmp_path}", "logger.use_tb=False", "logger.use_console=False"],
    )
    assert cfg.env.scenario == "inverted_pendulum"
    result = run_anakin_measured(cfg, pqnc.SYSTEM)
    assert result.absolute_return >= 900, result
