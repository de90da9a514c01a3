"""The jumanji and brax adapters behind `EpisodeEnv`: shapes, termination, truncation, reset."""

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stoix.base_types import StepType, TimeStep
from stoix.wrappers.brax import BraxAdapter
from stoix.wrappers.episode import EpisodeEnv
from stoix.wrappers.jumanji import DEFAULT_MAX_EPISODE_STEPS, JumanjiAdapter

NUM_ENVS = 4
# Snake moving up from any row of its 12-row grid hits the wall within 12 steps, and a 2048
# board cannot fill (so cannot end) in 13 moves: a cap of 13 sees both a termination and a cap.
JUMANJI_CAP = 13
# The spring inverted pendulum falls in ~25 steps under random pushes and in ~35 without any.
BRAX_CAP = 20

Batched = Tuple[Callable, Callable]


def _batched(env: EpisodeEnv) -> Batched:
    return jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))


def _rollout(step: Callable, state, actions: np.ndarray) -> Tuple[object, TimeStep]:
    """Steps with a fixed [T, N, ...] action sequence and stacks the timesteps on axis 0."""
    timesteps = []
    for action in actions:
        state, timestep = step(state, action)
        timesteps.append(timestep)
    return state, jax.tree.map(lambda *xs: np.stack(xs), *timesteps)


def _check_timestep(timestep: TimeStep, env: EpisodeEnv, lead: Tuple[int, ...]) -> None:
    spec = env.spec
    mask_size = spec.num_actions
    assert timestep.step_type.shape == lead and timestep.step_type.dtype == np.int8
    assert timestep.reward.shape == lead and timestep.reward.dtype == np.float32
    assert timestep.discount.shape == lead and timestep.discount.dtype == np.float32
    for obs in (timestep.observation, timestep.next_observation):
        assert obs.agent_view.shape == lead + spec.observation_shape
        assert obs.agent_view.dtype == np.float32
        assert obs.action_mask.shape == lead + (mask_size,) and obs.action_mask.dtype == bool
        assert obs.step_count.shape == lead and obs.step_count.dtype == np.int32
    assert timestep.metrics.episode_return.dtype == np.float32
    assert timestep.metrics.episode_length.dtype == np.int32
    assert timestep.metrics.is_terminal_step.dtype == bool


def _check_ends(timestep: TimeStep) -> None:
    """Terminations never bootstrap, truncations do, and both hand over a fresh episode."""
    step_type = np.asarray(timestep.step_type)
    discount = np.asarray(timestep.discount)
    assert np.all(discount[step_type == StepType.TERMINATED] == 0.0)
    assert np.all(discount[step_type != StepType.TERMINATED] == 1.0)
    ended = step_type >= StepType.TERMINATED
    assert np.array_equal(np.asarray(timestep.metrics.is_terminal_step), ended)
    assert np.all(np.asarray(timestep.observation.step_count)[ended] == 0)
    assert np.all(np.asarray(timestep.next_observation.step_count)[ended] > 0)


# JUMANJI


@pytest.fixture(scope="module", params=["Snake-v1", "Game2048-v1"])
def jumanji_env(request) -> Tuple[str, EpisodeEnv, Batched]:
    env = EpisodeEnv(JumanjiAdapter(request.param), max_episode_steps=JUMANJI_CAP)
    return request.param, env, _batched(env)


def _masked_random_actions(key: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf))


def test_jumanji_spec(jumanji_env) -> None:
    scenario, env, _ = jumanji_env
    assert env.spec.action_kind == "discrete"
    assert env.spec.num_actions == 4
    assert env.spec.max_episode_steps == JUMANJI_CAP
    own_limit = {"Snake-v1": 4000, "Game2048-v1": DEFAULT_MAX_EPISODE_STEPS}[scenario]
    assert env.adapter.spec.max_episode_steps == own_limit
    view = {"Snake-v1": (12, 12, 5), "Game2048-v1": (4, 4)}[scenario]
    assert env.spec.observation_shape == view


def test_jumanji_masked_rollout_is_capped(jumanji_env) -> None:
    _, env, (reset, step) = jumanji_env
    state, timestep = reset(jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))
    _check_timestep(timestep, env, (NUM_ENVS,))
    assert np.all(np.asarray(timestep.step_type) == StepType.FIRST)
    timesteps = []
    for key in jax.random.split(jax.random.PRNGKey(1), JUMANJI_CAP):
        mask = timestep.observation.action_mask
        assert np.all(np.asarray(mask).any(-1)), "every live state has a legal action"
        state, timestep = step(state, _masked_random_actions(key, mask))
        timesteps.append(timestep)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *timesteps)
    _check_timestep(stacked, env, (JUMANJI_CAP, NUM_ENVS))
    _check_ends(stacked)
    # Legal moves cannot end either game this early, so every env runs into the cap.
    assert np.all(stacked.step_type[:-1] == StepType.MID)
    assert np.all(stacked.step_type[-1] == StepType.TRUNCATED)
    assert np.all(stacked.discount[-1] == 1.0)
    assert np.all(stacked.next_observation.step_count[-1] == JUMANJI_CAP)
    assert np.all(stacked.metrics.episode_length[-1] == JUMANJI_CAP)


# Only Snake can be driven into a terminal state in a few steps.
@pytest.mark.parametrize("jumanji_env", ["Snake-v1"], indirect=True)
def test_snake_wall_terminates_and_resets(jumanji_env) -> None:
    _, env, (reset, step) = jumanji_env
    state, _ = reset(jax.random.split(jax.random.PRNGKey(2), NUM_ENVS))
    up = np.zeros((12, NUM_ENVS), np.int32)
    _, timesteps = _rollout(step, state, up)
    _check_ends(timesteps)
    terminated = timesteps.step_type == StepType.TERMINATED
    assert np.all(terminated.any(0)), "moving up must hit the top wall within 12 steps"
    for env_index in range(NUM_ENVS):
        t = int(np.argmax(terminated[:, env_index]))
        assert timesteps.discount[t, env_index] == 0.0
        assert np.all(timesteps.step_type[:t, env_index] == StepType.MID)
        assert timesteps.metrics.episode_length[t, env_index] == t + 1
        reset_view = timesteps.observation.agent_view[t, env_index]
        final_view = timesteps.next_observation.agent_view[t, env_index]
        assert not np.array_equal(reset_view, final_view)


def test_snake_own_time_limit_is_a_truncation() -> None:
    # Jumanji's Snake ends its time limit with discount 0; the adapter must report a time-out.
    env = EpisodeEnv(JumanjiAdapter("Snake-v1", time_limit=5))
    assert env.spec.max_episode_steps == 5
    reset, step = _batched(env)
    state, timestep = reset(jax.random.split(jax.random.PRNGKey(3), NUM_ENVS))
    for key in jax.random.split(jax.random.PRNGKey(4), 5):
        state, timestep = step(state, _masked_random_actions(key, timestep.observation.action_mask))
    assert np.all(np.asarray(timestep.step_type) == StepType.TRUNCATED)
    assert np.all(np.asarray(timestep.discount) == 1.0)


def test_jumanji_rejects_non_discrete_actions() -> None:
    with pytest.raises(ValueError, match="MultiDiscreteArray"):
        JumanjiAdapter("Minesweeper-v0")


# BRAX


@pytest.fixture(scope="module")
def pendulum() -> Tuple[EpisodeEnv, Batched]:
    env = EpisodeEnv(BraxAdapter("inverted_pendulum"), max_episode_steps=BRAX_CAP)
    return env, _batched(env)


@pytest.mark.parametrize(
    "scenario, obs_dim, action_dim",
    [("inverted_pendulum", 4, 1), ("halfcheetah", 17, 6), ("ant", 27, 8), ("hopper", 11, 3)],
)
def test_brax_spec(scenario: str, obs_dim: int, action_dim: int) -> None:
    spec = BraxAdapter(scenario).spec
    assert spec.action_kind == "continuous"
    assert spec.observation_shape == (obs_dim,)
    assert spec.num_actions == action_dim
    assert spec.action_minimum == (-1.0,) * action_dim
    assert spec.action_maximum == (1.0,) * action_dim
    assert spec.max_episode_steps == 1000


def test_brax_random_pushes_terminate_and_reset(pendulum) -> None:
    env, (reset, step) = pendulum
    state, timestep = reset(jax.random.split(jax.random.PRNGKey(5), NUM_ENVS))
    _check_timestep(timestep, env, (NUM_ENVS,))
    # Pushing beyond [-1, 1] checks that out-of-range actions are clipped, not blown up.
    actions = np.asarray(
        jax.random.uniform(jax.random.PRNGKey(6), (60, NUM_ENVS, 1), minval=-2, maxval=2)
    )
    _, timesteps = _rollout(step, state, actions)
    _check_timestep(timesteps, env, (60, NUM_ENVS))
    _check_ends(timesteps)
    assert np.all(np.isfinite(timesteps.next_observation.agent_view))
    terminated = timesteps.step_type == StepType.TERMINATED
    assert terminated.any(), "random pushes should topple the pendulum within 60 steps"
    assert np.all(timesteps.reward == 1.0)
    reset_view = timesteps.observation.agent_view[terminated]
    final_view = timesteps.next_observation.agent_view[terminated]
    assert np.all(np.abs(final_view[:, 1]) > 0.2), "terminal states have the pole past 0.2 rad"
    assert np.all(np.abs(reset_view[:, 1]) <= 0.01), "the next episode starts upright"


def test_brax_cap_truncates(pendulum) -> None:
    env, (reset, step) = pendulum
    state, _ = reset(jax.random.split(jax.random.PRNGKey(7), NUM_ENVS))
    _, timesteps = _rollout(step, state, np.zeros((BRAX_CAP, NUM_ENVS, 1), np.float32))
    _check_ends(timesteps)
    assert np.all(timesteps.step_type[:-1] == StepType.MID)
    assert np.all(timesteps.step_type[-1] == StepType.TRUNCATED)
    assert np.all(timesteps.discount[-1] == 1.0)
    assert np.all(timesteps.metrics.episode_return[-1] == float(BRAX_CAP))
    assert np.all(timesteps.observation.step_count[-1] == 0)
