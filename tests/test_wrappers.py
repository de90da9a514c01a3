"""EpisodeEnv over gymnax: auto-reset, termination vs truncation, metrics, the step cap."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from stoix.base_types import StepType
from stoix.wrappers.env_factory import make_env
from stoix.wrappers.episode import EpisodeEnv
from stoix.wrappers.gymnax import GYMNAX_TASKS, GymnaxAdapter
from tests.helpers import REPO


def rollout(env, actions, key=0):
    state, ts = env.reset(jax.random.PRNGKey(key))
    step = jax.jit(env.step)
    out = []
    for a in actions:
        state, ts = step(state, a)
        out.append(ts)
    return out


def test_cartpole_termination_is_not_bootstrapped_and_resets():
    env = EpisodeEnv(GymnaxAdapter("CartPole-v1"))
    steps = rollout(env, [jnp.int32(0)] * 40)
    ends = [i for i, t in enumerate(steps) if bool(t.last())]
    assert ends, "pushing left forever must drop the pole"
    end = steps[ends[0]]
    assert int(end.step_type) == StepType.TERMINATED
    assert float(end.discount) == 0.0
    assert bool(end.metrics.is_terminal_step)
    assert int(end.metrics.episode_length) == ends[0] + 1
    assert float(end.metrics.episode_return) == ends[0] + 1
    # The next observation is the fallen pole; the observation is the fresh episode's start.
    assert not np.allclose(end.observation.agent_view, end.next_observation.agent_view)
    assert abs(float(end.next_observation.agent_view[2])) > 0.2
    assert np.all(np.abs(np.asarray(end.observation.agent_view)) <= 0.05)
    after = steps[ends[0] + 1]
    assert int(after.metrics.episode_length) == 1


def test_step_cap_truncates_with_discount_one():
    env = EpisodeEnv(GymnaxAdapter("Pendulum-v1"), max_episode_steps=5)
    steps = rollout(env, [jnp.zeros((1,))] * 11)
    types = [int(t.step_type) for t in steps]
    assert types[4] == StepType.TRUNCATED and types[9] == StepType.TRUNCATED
    assert all(t == StepType.MID for i, t in enumerate(types) if i not in (4, 9))
    assert float(steps[4].discount) == 1.0
    assert int(steps[4].metrics.episode_length) == 5
    assert int(steps[5].metrics.episode_length) == 1
    np.testing.assert_allclose(
        float(steps[4].metrics.episode_return), sum(float(t.reward) for t in steps[:5]), rtol=1e-5
    )


def test_suite_time_limit_is_truncation():
    env = EpisodeEnv(GymnaxAdapter("Pendulum-v1"))
    assert env.max_episode_steps == 200
    state, _ = env.reset(jax.random.PRNGKey(0))

    def body(carry, _):
        state = carry
        state, ts = env.step(state, jnp.zeros((1,)))
        return state, ts.step_type

    _, types = jax.lax.scan(body, state, None, length=200)
    assert int(types[-1]) == StepType.TRUNCATED
    assert np.all(np.asarray(types[:-1]) == StepType.MID)


def test_vmapped_envs_reset_independently():
    env = EpisodeEnv(GymnaxAdapter("CartPole-v1"))
    states, ts = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 8))
    assert ts.observation.agent_view.shape == (8, 4)
    assert ts.observation.action_mask.shape == (8, 2)
    assert len({tuple(np.round(np.asarray(o), 6)) for o in ts.observation.agent_view}) == 8


def test_factory_builds_every_gymnax_task():
    for task, scenario in GYMNAX_TASKS.items():
        env = make_env(
            OmegaConf.create({"suite": "gymnax", "scenario": scenario, "task_name": task})
        )
        assert env.spec.observation_shape
        assert env.spec.num_actions >= 1


def test_step_to_end_matches_step_but_never_resets():
    env = EpisodeEnv(GymnaxAdapter("CartPole-v1"))
    state, _ = env.reset(jax.random.PRNGKey(0))
    step, step_to_end = jax.jit(env.step), jax.jit(env.step_to_end)
    for _ in range(40):
        reset_state, ts = step(state, jnp.int32(0))
        kept_state, ts_to_end = step_to_end(state, jnp.int32(0))
        # Same transition, same metrics; only what follows an end differs.
        np.testing.assert_array_equal(
            ts.next_observation.agent_view, ts_to_end.next_observation.agent_view
        )
        assert int(ts.step_type) == int(ts_to_end.step_type)
        if bool(ts.last()):
            break
        np.testing.assert_array_equal(ts.observation.agent_view, ts_to_end.observation.agent_view)
        state = reset_state
    assert bool(ts.last()), "pushing left forever must drop the pole"
    # At the end, step continues in a fresh episode; step_to_end stays on the fallen pole.
    np.testing.assert_array_equal(
        ts_to_end.observation.agent_view, ts_to_end.next_observation.agent_view
    )
    assert not np.allclose(ts.observation.agent_view, ts_to_end.observation.agent_view)
    assert abs(float(kept_state.adapter_state.theta)) > 0.2


def test_gymnax_adapter_defers_the_plotting_imports_and_rendering_still_finds_them():
    """A fresh interpreter: importing the adapter must not import seaborn or pyplot (about 2 s
    of every run's start-up), and using them afterwards imports the real modules."""
    script = """
import sys
import stoix.wrappers.gymnax
assert "scipy.stats" not in sys.modules, "seaborn's dependencies were imported"
assert type(sys.modules["seaborn"]).__name__ == "_DeferredModule"
import seaborn as sns
import matplotlib.pyplot as plt
from matplotlib.pyplot import Figure
assert len(sns.color_palette("cubehelix", 3)) == 3
assert isinstance(plt.figure(), Figure)
assert type(sys.modules["seaborn"]).__name__ == "module"
assert "scipy.stats" in sys.modules
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
