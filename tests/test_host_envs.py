"""Host (numpy) vector envs for Sebulba: the `HostVectorEnv` contract on envpool and gymnasium."""

from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
from omegaconf import OmegaConf

pytest.importorskip("envpool")
pytest.importorskip("gymnasium")

from stoix.errors import ConfigError

# noqa: E402
from stoix.wrappers.host import HostStep, HostVectorEnv  # noqa: E402
from stoix.wrappers.host_envpool import EnvpoolHostEnv  # noqa: E402
from stoix.wrappers.host_factory import make_host_env  # noqa: E402
from stoix.wrappers.host_gymnasium import GymnasiumHostEnv  # noqa: E402

ENV_CONFIGS = Path(__file__).resolve().parents[1] / "stoix" / "configs" / "env"
COUNTING = "tests.host_env_fixtures:HostCounting-v0"
NUM_ENVS = 4
# CartPole's Euler step moves the cart by tau times the velocity of the previous state.
CARTPOLE_TAU = 0.02
# CartPole starts every state variable uniformly in [-0.05, 0.05].
CARTPOLE_RESET_BOUND = 0.05

CARTPOLE: Dict[str, Callable[..., HostVectorEnv]] = {
    # Two worker threads so that envpool can return envs out of order.
    "envpool": lambda **kw: EnvpoolHostEnv("CartPole-v1", NUM_ENVS, 0, num_threads=2, **kw),
    "gymnasium": lambda **kw: GymnasiumHostEnv("CartPole-v1", NUM_ENVS, 0, **kw),
}


def _run(env: HostVectorEnv, actions: List[np.ndarray]) -> List[HostStep]:
    return [env.step(a) for a in actions]


def _check_layout(step: HostStep, env: HostVectorEnv) -> None:
    n = env.num_envs
    assert step.observation.shape == (n, *env.spec.observation_shape)
    for field, dtype in [
        ("reward", np.float32),
        ("terminated", np.bool_),
        ("truncated", np.bool_),
        ("valid", np.bool_),
        ("episode_done", np.bool_),
        ("episode_return", np.float32),
        ("episode_length", np.int32),
    ]:
        value = getattr(step, field)
        assert value.shape == (n,) and value.dtype == dtype, field
    assert step.action_mask.shape == (n, env.spec.num_actions) and step.action_mask.all()


@pytest.mark.parametrize("suite", sorted(CARTPOLE))
def test_cartpole_layout_and_env_order(suite: str) -> None:
    env = CARTPOLE[suite]()
    assert env.num_envs == NUM_ENVS
    assert env.spec.observation_shape == (4,) and env.spec.action_kind == "discrete"
    assert env.spec.num_actions == 2 and env.spec.max_episode_steps == 500
    first = env.reset()
    _check_layout(first, env)
    assert first.observation.dtype == np.float32
    assert first.valid.all() and not first.reward.any() and not first.episode_done.any()
    # Pushing envs 0, 2 left and 1, 3 right for a few steps sets their cart velocities' signs:
    # every env got its own action and came back in its own place.
    pushes = np.array([0, 1, 0, 1])
    for step in _run(env, [pushes] * 6):
        _check_layout(step, env)
        assert step.valid.all() and not step.terminated.any()
        assert np.array_equal(step.observation[:, 1] > 0, pushes == 1)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(NUM_ENVS + 1))
    env.close()
    env.close()


@pytest.mark.parametrize("suite", sorted(CARTPOLE))
def test_cartpole_episodes_match_their_rewards(suite: str) -> None:
    env = CARTPOLE[suite]()
    env.reset()
    rng = np.random.default_rng(0)
    steps = _run(env, [rng.integers(0, 2, NUM_ENVS) for _ in range(120)])
    env.close()
    ends = 0
    for i in range(NUM_ENVS):
        running_return, running_length = 0.0, 0
        for t, step in enumerate(steps):
            if step.valid[i]:
                running_return += float(step.reward[i])
                running_length += 1
            else:
                assert step.reward[i] == 0.0 and not step.episode_done[i]
            if step.terminated[i]:
                assert step.episode_done[i] and not step.truncated[i]
                # The episode's true final state is beyond CartPole's limits.
                assert np.abs(step.observation[i, 2]) > 0.2 or np.abs(step.observation[i, 0]) > 2.4
                if t + 1 < len(steps):
                    after = steps[t + 1]
                    assert not after.valid[i] and after.reward[i] == 0.0
                    assert not after.terminated[i] and not after.truncated[i]
                    assert np.abs(after.observation[i]).max() <= CARTPOLE_RESET_BOUND
            if step.episode_done[i]:
                ends += 1
                assert step.episode_return[i] == pytest.approx(running_return)
                assert step.episode_length[i] == running_length
                running_return, running_length = 0.0, 0
    assert ends >= NUM_ENVS, "random CartPole episodes end within 120 steps"


@pytest.mark.parametrize("suite", sorted(CARTPOLE))
def test_cartpole_truncation_keeps_the_final_observation(suite: str) -> None:
    env = CARTPOLE[suite](max_episode_steps=5)
    assert env.spec.max_episode_steps == 5
    env.reset()
    # Alternating pushes keep the pole up well past 5 steps.
    steps = _run(env, [np.full(NUM_ENVS, t % 2) for t in range(8)])
    env.close()
    before, last, after = steps[3], steps[4], steps[5]
    assert not before.truncated.any()
    assert last.truncated.all() and not last.terminated.any() and last.valid.all()
    assert last.episode_done.all() and (last.episode_length == 5).all()
    assert np.allclose(last.episode_return, 5.0)
    # The truncation step's observation is the next state of the dynamics, not a reset state.
    x, x_dot = before.observation[:, 0], before.observation[:, 1]
    assert np.allclose(last.observation[:, 0], x + CARTPOLE_TAU * x_dot, atol=1e-5)
    assert not after.valid.any() and not after.reward.any()
    assert not after.truncated.any() and not after.episode_done.any()
    assert np.abs(after.observation).max() <= CARTPOLE_RESET_BOUND
    assert steps[6].valid.all() and (steps[6].episode_length == 1).all()


def _expected_counting(length: int, steps: int) -> List[tuple]:
    """(count, reward, terminated, valid, episode_return) of one CountingEnv per step."""
    rows, count = [], 0
    for _ in range(steps):
        if count == length:  # the reset step after the episode's end
            count = 0
            rows.append((0, 0.0, False, False, 0.0))
            continue
        count += 1
        rows.append((count, float(count), count == length, True, count * (count + 1) / 2))
    return rows


def test_gymnasium_semantics_are_exact_on_a_counting_env() -> None:
    env = GymnasiumHostEnv(COUNTING, num_envs=3, seed=10, episode_length=2)
    first = env.reset()
    _check_layout(first, env)
    assert first.observation.tolist() == [[0, 10], [0, 11], [0, 12]]
    steps = _run(env, [np.zeros(3, np.int64)] * 9)
    env.close()
    for i, tag in enumerate([10, 11, 12]):
        for step, row in zip(steps, _expected_counting(2 + tag % 3, 9), strict=True):
            count, reward, terminated, valid, running_return = row
            assert step.observation[i].tolist() == [count, tag]
            assert step.reward[i] == reward and step.valid[i] == valid
            assert step.terminated[i] == terminated and not step.truncated[i]
            assert step.episode_done[i] == terminated
            assert step.episode_return[i] == running_return
            assert step.episode_length[i] == (count if valid else 0)


def test_gymnasium_truncation_and_termination_at_the_cap() -> None:
    env = GymnasiumHostEnv(COUNTING, num_envs=2, seed=0, max_episode_steps=3, episode_length=50)
    env.reset()
    steps = _run(env, [np.zeros(2)] * 5)
    env.close()
    assert [int(s.observation[0, 0]) for s in steps] == [1, 2, 3, 0, 1]
    assert steps[2].truncated.all() and not steps[2].terminated.any()
    assert steps[2].episode_done.all() and (steps[2].episode_return == 6.0).all()
    assert not steps[3].valid.any() and steps[4].valid.all()
    # An episode that terminates on its last allowed step is terminal: nothing to bootstrap.
    env = GymnasiumHostEnv(COUNTING, num_envs=1, seed=0, max_episode_steps=3, episode_length=3)
    env.reset()
    last = _run(env, [np.zeros(1)] * 3)[-1]
    env.close()
    assert last.terminated.all() and not last.truncated.any() and last.episode_done.all()


def test_gymnasium_async_matches_sync() -> None:
    results = []
    for vectorization in ["sync", "async"]:
        env = GymnasiumHostEnv(COUNTING, num_envs=2, seed=3, vectorization=vectorization)
        env.reset()
        results.append(_run(env, [np.zeros(2)] * 6))
        env.close()
        env.close()
    for a, b in zip(*results, strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


def test_gymnasium_pendulum_takes_continuous_actions() -> None:
    env = GymnasiumHostEnv("Pendulum-v1", num_envs=2, seed=0, max_episode_steps=4)
    assert env.spec.action_kind == "continuous" and env.spec.num_actions == 1
    assert env.spec.action_minimum == (-2.0,) and env.spec.action_maximum == (2.0,)
    assert env.spec.observation_shape == (3,)
    env.reset()
    steps = _run(env, [np.full((2, 1), 1.5, np.float32)] * 5)
    for step in steps:
        _check_layout(step, env)
        assert step.observation.dtype == np.float32
    assert (steps[0].reward < 0).all() and steps[3].truncated.all()
    assert not steps[4].valid.any()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(2, np.float32))
    env.close()


class _ScramblingPool:
    """An envpool pool that returns its envs in a new order at every call, as envpool may (its
    threads finish in any order; a sync pool of this envpool version happens not to)."""

    def __init__(self, pool: Any):
        self._pool = pool
        self._rng = np.random.default_rng(0)

    def _scramble(self, arrays: tuple, info: Dict[str, Any]) -> tuple:
        order = self._rng.permutation(len(info["env_id"]))
        info = {k: v[order] for k, v in info.items() if isinstance(v, np.ndarray)}
        return (*[np.asarray(a)[order] for a in arrays], info)

    def reset(self, env_ids: np.ndarray) -> tuple:
        frames, info = self._pool.reset(env_ids)
        return self._scramble((frames,), info)

    def step(self, actions: np.ndarray, env_ids: np.ndarray) -> tuple:
        *arrays, info = self._pool.step(actions, env_ids)
        return self._scramble(tuple(arrays), info)

    def close(self) -> None:
        self._pool.close()


def test_envpool_puts_envs_back_in_env_id_order() -> None:
    plain = CARTPOLE["envpool"](max_episode_steps=6)
    scrambled = CARTPOLE["envpool"](max_episode_steps=6)
    scrambled._pool = _ScramblingPool(scrambled._pool)  # type: ignore[attr-defined]
    actions = [np.array([0, 1, 1, 0])] * 9
    expected = [plain.reset(), *_run(plain, actions)]
    got = [scrambled.reset(), *_run(scrambled, actions)]
    plain.close()
    scrambled.close()
    for a, b in zip(expected, got, strict=True):
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)


def test_envpool_continuous_spec() -> None:
    env = EnvpoolHostEnv("Pendulum-v1", num_envs=2, seed=0)
    assert env.spec.action_kind == "continuous" and env.spec.num_actions == 1
    assert env.spec.action_minimum == (-2.0,) and env.spec.action_maximum == (2.0,)
    env.reset()
    step = env.step(np.zeros((2, 1)))
    _check_layout(step, env)
    env.close()


def test_gymnasium_runs_ale_ids_through_ale_py() -> None:
    env = GymnasiumHostEnv("ALE/Pong-v5", num_envs=2, seed=0)
    assert env.spec.num_actions == 6 and env.spec.observation_shape == (210, 160, 3)
    first = env.reset()
    assert first.observation.dtype == np.uint8
    for step in _run(env, [np.array([0, 1])] * 3):
        _check_layout(step, env)
    env.close()


def test_envpool_pong_from_the_anakin_config() -> None:
    # pong.yaml's `seed: ${arch.seed}` cannot resolve on its own: the factory drops it.
    env = make_host_env(OmegaConf.load(ENV_CONFIGS / "envpool" / "pong.yaml"), 2, seed=1)
    assert env.spec.observation_shape == (84, 84, 4) and env.spec.num_actions == 6
    assert env.spec.max_episode_steps == 27000
    first = env.reset()
    assert first.observation.dtype == np.uint8 and first.observation.shape == (2, 84, 84, 4)
    for step in _run(env, [np.array([2, 3])] * 5):
        _check_layout(step, env)
        assert step.observation.flags.c_contiguous and step.valid.all()
        assert set(step.reward.tolist()) <= {-1.0, 0.0, 1.0}
    env.close()
    env.close()


def test_envpool_breakout_lives_terminate_but_the_game_goes_on() -> None:
    env = EnvpoolHostEnv("Breakout-v5", num_envs=1, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    steps = _run(env, [rng.integers(0, 4, 1) for _ in range(400)])
    env.close()
    lives_lost = [t for t, s in enumerate(steps) if s.terminated[0]]
    assert lives_lost, "random Breakout loses a life within 400 steps"
    t = lives_lost[0]
    assert not steps[t].episode_done[0]
    assert not steps[t + 1].valid[0] and steps[t + 1].reward[0] == 0.0
    # The game's length runs on across the life (the reset step is no agent step).
    assert steps[t + 2].episode_length[0] == steps[t].episode_length[0] + 1


def test_factory_configs_and_errors() -> None:
    env = make_host_env(OmegaConf.load(ENV_CONFIGS / "envpool" / "cartpole.yaml"), 2, seed=0)
    assert env.spec.num_actions == 2
    env.close()
    env = make_host_env(OmegaConf.load(ENV_CONFIGS / "gymnasium" / "pendulum.yaml"), 2, seed=0)
    assert env.spec.action_kind == "continuous"
    env.close()
    # A `seed` in kwargs gives way to the seed argument (CountingEnv would refuse it).
    cfg = OmegaConf.create(
        {"suite": "gymnasium", "scenario": COUNTING, "kwargs": {"seed": 5, "episode_length": 4}}
    )
    env = make_host_env(cfg, 1, seed=7)
    assert env.reset().observation.tolist() == [[0, 7]]
    env.close()

    def refused(suite: str, scenario: str, match: str) -> None:
        cfg = OmegaConf.create({"suite": suite, "scenario": scenario, "max_episode_steps": None})
        with pytest.raises(ConfigError, match=match) as err:
            make_host_env(cfg, 2, seed=0)
        assert "\n" not in str(err.value)

    refused("nope", "CartPole-v1", "env.suite='nope'")
    refused("envpool", "NoSuchTask-v0", "env.scenario='NoSuchTask-v0'")
    refused("gymnasium", "NoSuchTask-v0", "env.scenario='NoSuchTask-v0'")
    refused("gymnasium", "no_such_module_xyz:Env-v0", "env.suite='gymnasium'")
