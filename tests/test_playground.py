"""MuJoCo Playground DM-suite adapter: spec, time-limit truncation, refusal of unknown tasks."""

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

pytest.importorskip("mujoco_playground")

from stoix.base_types import StepType  # noqa: E402
from stoix.errors import ConfigError

# noqa: E402
from stoix.wrappers.env_factory import make_env

  # noqa: E402


def _env_cfg(scenario: str, cap: int | None):
    return OmegaConf.create(
        {
            "suite": "playground",
            "scenario": scenario,
            "task_name": "t",
            "kwargs": {"impl": "jax"},
            "max_episode_steps": cap,
        }
    )


@pytest.mark.slow  # MJX compiles for about 40 s on 2 cores; kept out of the 20-minute run
def test_cartpole_balance_truncates_at_the_cap_and_pays_in_unit_range() -> None:
    env = make_env(_env_cfg("CartpoleBalance", 5))
    assert env.spec.observation_shape == (5,) and env.spec.num_actions == 1
    assert env.spec.action_kind == "continuous" and env.max_episode_steps == 5

    @jax.jit
    def run(key):
        states, first = jax.vmap(env.reset)(jax.random.split(key, 2))

        def body(states, k):
            action = jax.random.uniform(k, (2, 1), minval=-1.0, maxval=1.0)
            return jax.vmap(env.step)(states, action)

        return first, jax.lax.scan(body, states, jax.random.split(key, 11))[1]

    first, traj = jax.device_get(run(jax.random.PRNGKey(0)))
    assert np.all(np.isfinite(first.observation.agent_view))
    types = traj.step_type[:, 0]
    assert types[4] == StepType.TRUNCATED and types[9] == StepType.TRUNCATED
    assert np.all(np.delete(types, [4, 9]) == StepType.MID)
    assert np.all(traj.discount == 1.0)  # the cart never "dies": only truncations
    assert np.all((traj.reward >= 0.0) & (traj.reward <= 1.0)) and traj.reward.sum() > 0
    # The truncated step's next observation is the true last state, not the reset's.
    assert not np.array_equal(traj.next_observation.agent_view[4], traj.observation.agent_view[4])


def test_unknown_task_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError, match="not a MuJoCo Playground DM-suite task"):
        make_env(_env_cfg("CartpoleBalancing", None))
