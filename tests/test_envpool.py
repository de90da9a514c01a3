"""envpool Atari inside the compiled loop: the adapter's contract and a PQN smoke run."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import read_metrics, run_script, runs_of

pytest.importorskip("envpool")

from stoix.base_types import StepType  # noqa: E402
from stoix.errors import ConfigError

# noqa: E402
from stoix.wrappers.envpool import EnvpoolEnv  # noqa: E402

NUM_ENVS = 3


def _rollout(env: EnvpoolEnv, steps: int, seed: int = 0):
    """Random actions for `steps` steps of NUM_ENVS envs, all inside one jit."""

    @jax.jit
    def run(key):
        state, first = jax.vmap(env.reset)(jax.random.split(key, NUM_ENVS))

        def body(state, k):
            action = jax.random.randint(k, (NUM_ENVS,), 0, env.spec.num_actions)
            return jax.vmap(env.step)(state, action)

        _, traj = jax.lax.scan(body, state, jax.random.split(key, steps))
        return first, traj

    return jax.device_get(run(jax.random.PRNGKey(seed)))


def test_observations_are_hwc_floats_and_lives_terminate() -> None:
    env = EnvpoolEnv("Breakout-v5", episodic_life=True)
    assert env.spec.observation_shape == (84, 84, 4)
    first, traj = _rollout(env, 400)
    view = first.observation.agent_view
    assert view.shape == (NUM_ENVS, 84, 84, 4) and view.dtype == np.float32
    assert 0.0 <= view.min() and view.max() <= 1.0 and view.max() > 0.0
    # The newest frame is the last channel and differs from the oldest once the game moves.
    assert not np.array_equal(
        traj.observation.agent_view[50, 0, ..., 0], traj.observation.agent_view[50, 0, ..., 3]
    )

    step_type = traj.step_type[:, 0]
    lives_lost = np.flatnonzero(step_type == StepType.TERMINATED)
    assert len(lives_lost) >= 2, "random Breakout loses a life within 400 steps"
    t = lives_lost[0]
    assert traj.discount[t, 0] == 0.0
    # envpool's reset step: no reward, absorbing, not an episode end.
    assert step_type[t + 1] == StepType.MID and traj.discount[t + 1, 0] == 0.0
    assert traj.reward[t + 1, 0] == 0.0
    # A lost life is not the end of the game that the metrics count.
    assert not traj.metrics.is_terminal_step[t, 0]
    assert traj.metrics.episode_length[t, 0] == t + 1
    assert np.all(traj.step_type != StepType.TRUNCATED)


def test_the_step_cap_truncates_and_ends_the_game() -> None:
    env = EnvpoolEnv("Pong-v5", max_episode_steps=20)
    _, traj = _rollout(env, 45)
    truncated = np.flatnonzero(traj.step_type[:, 0] == StepType.TRUNCATED)
    assert truncated[0] == 19
    assert traj.discount[19, 0] == 1.0 and traj.metrics.is_terminal_step[19, 0]
    assert traj.metrics.episode_length[19, 0] == 20
    assert not np.any(traj.step_type == StepType.TERMINATED)


def test_more_than_one_replica_per_pool_is_refused() -> None:
    env = EnvpoolEnv("Pong-v5")
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * NUM_ENVS).reshape(2, NUM_ENVS, 2)
    with pytest.raises(ConfigError, match="arch.num_seeds=1"):
        jax.jit(jax.vmap(jax.vmap(env.reset)))(keys)


def test_one_env_cannot_step_apart_from_its_pool() -> None:
    env = EnvpoolEnv("Pong-v5")
    state, _ = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(Exception, match="steps as a whole pool"):
        jax.block_until_ready(jax.jit(env.step)(state, jnp.zeros((), jnp.int32)))


def test_pqn_trains_on_pong_on_two_devices(tmp_path: Path) -> None:
    result = run_script(
        "stoix/systems/q_learning/anakin/ff_pqn.py",
        [
            "env=envpool/pong",
            "network=visual_pqn_atari",
            "arch.total_num_envs=4",
            "system.rollout_length=8",
            "system.num_minibatches=2",
            "system.epochs=1",
            "arch.total_timesteps=64",
            "arch.num_evaluation=2",
            "arch.num_eval_episodes=2",
            "arch.eval_max_steps=30",
            "arch.absolute_metric=False",
            "logger.use_console=False",
            "logger.use_tb=False",
            f"logger.base_exp_path={tmp_path}",
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path)
    (run,) = runs_of(metrics).values()
    assert len([k for k in run if k.startswith("step_")]) == 2


@pytest.mark.slow  # the refusal itself is checked in process above; this is the command line
def test_several_seeds_are_refused_in_one_line(tmp_path: Path) -> None:
    result = run_script(
        "stoix/systems/q_learning/anakin/ff_pqn.py",
        [
            "env=envpool/pong",
            "arch.num_seeds=2",
            "arch.total_num_envs=4",
            "system.rollout_length=8",
            "system.num_minibatches=2",
            "arch.total_timesteps=64",
            "arch.num_evaluation=2",
            f"logger.base_exp_path={tmp_path}",
        ],
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().count("\n") == 0
    assert "arch.num_seeds=1" in result.stderr
    assert not any(tmp_path.rglob("metrics.json"))
