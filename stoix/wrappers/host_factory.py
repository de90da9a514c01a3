"""Builds Sebulba's host vector envs from the `env` config, and the logic their adapters share.

Every host adapter meets the same contract of `stoix.wrappers.host` from the same raw material
(a suite's batched, next-step auto-resetting step in env-id order), so the episode bookkeeping,
the action checks and the spec built from gymnasium spaces live here once; `host.py` itself
stays the bare interface.
"""

from typing import TYPE_CHECKING, Any, Callable, Dict, NamedTuple, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stoix.base_types import EnvSpec
from stoix.utils.config import ConfigError
from stoix.wrappers.host import HostStep, HostVectorEnv

if TYPE_CHECKING:
    from gymnasium import spaces


class SuiteStep(NamedTuple):
    """One batched step as the suite reported it, envs in env-id order, before any fixing up."""

    observation: np.ndarray  # [N, *observation_shape], already in the adapter's layout and dtype
    reward: np.ndarray  # [N] the training reward
    terminated: np.ndarray  # [N] bool; with episodic_life a lost life terminates too
    truncated: np.ndarray  # [N] bool
    game_over: np.ndarray  # [N] bool; the whole episode (for Atari: the game) ended for good
    score: np.ndarray  # [N] the unclipped reward that episode statistics add up


class HostEpisodes:
    """Turns a suite's next-step auto-reset stream into `HostStep`s with episode statistics.

    The suite's own flags on the reset step that follows an episode's end are not trusted (some
    suites repeat the previous flags there): which steps are reset steps is known from the step
    before, so they are forced to reward 0, no termination and `valid=False`. Reset steps are not
    agent steps and do not count in the episode length, also between lives of one Atari game.
    """

    def __init__(self, num_envs: int, num_actions: int):
        self._num_envs = num_envs
        self._action_mask = np.ones((num_envs, num_actions), bool)
        self._resetting = np.zeros(num_envs, bool)
        # float64 so long episodes of small rewards sum exactly enough; reported as float32.
        self._return = np.zeros(num_envs, np.float64)
        self._length = np.zeros(num_envs, np.int32)

    def first(self, observation: np.ndarray) -> HostStep:
        """The step that `reset` returns: every env starts a new episode."""
        self._resetting[:] = False
        self._return[:] = 0.0
        self._length[:] = 0
        no = np.zeros(self._num_envs, bool)
        return HostStep(
            observation=observation,
            reward=np.zeros(self._num_envs, np.float32),
            terminated=no,
            truncated=no.copy(),
            valid=np.ones(self._num_envs, bool),
            action_mask=self._action_mask.copy(),
            episode_done=no.copy(),
            episode_return=np.zeros(self._num_envs, np.float32),
            episode_length=np.zeros(self._num_envs, np.int32),
        )

    def step(self, raw: SuiteStep) -> HostStep:
        """Statistics hold the finished episode where `episode_done`, else the running totals."""
        live = ~self._resetting
        terminated = raw.terminated.astype(bool) & live
        time_limit = raw.truncated.astype(bool) & live
        # A step that is both terminal and the last one allowed is terminal: nothing to bootstrap.
        truncated = time_limit & ~terminated
        # The time limit also ends a game whose last step lost a life (the suite resets the game).
        episode_done = live & (raw.game_over.astype(bool) | time_limit)
        self._return += np.where(live, raw.score, 0.0)
        self._length += live
        episode_return = self._return.astype(np.float32)
        episode_length = self._length.copy()
        self._return[episode_done] = 0.0
        self._length[episode_done] = 0
        self._resetting = terminated | time_limit
        return HostStep(
            observation=raw.observation,
            reward=np.where(live, raw.reward, 0.0).astype(np.float32),
            terminated=terminated,
            truncated=truncated,
            valid=live,
            action_mask=self._action_mask.copy(),
            episode_done=episode_done,
            episode_return=episode_return,
            episode_length=episode_length,
        )


def spec_from_spaces(
    observation_space: "spaces.Space",
    action_space: "spaces.Space",
    observation_shape: Tuple[int, ...],
    max_episode_steps: int,
) -> EnvSpec:
    """The EnvSpec of a single env's gymnasium spaces (envpool speaks gymnasium spaces too)."""
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"only Box observations are supported, not {type(observation_space).__name__}"
        )
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(
            observation_shape=observation_shape,
            action_kind="discrete",
            num_actions=int(action_space.n),
            max_episode_steps=max_episode_steps,
        )
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return EnvSpec(
            observation_shape=observation_shape,
            action_kind="continuous",
            num_actions=int(action_space.shape[0]),
            action_minimum=tuple(float(x) for x in action_space.low),
            action_maximum=tuple(float(x) for x in action_space.high),
            max_episode_steps=max_episode_steps,
        )
    raise ValueError(
        f"only Discrete and one-dimensional Box actions are supported, not {action_space}"
    )


def observation_dtype(space: "spaces.Box") -> np.dtype:
    """uint8 images stay uint8 (4x less to move to the device); everything else is float32."""
    if space.dtype == np.uint8 and len(space.shape) >= 2:
        return np.dtype(np.uint8)
    return np.dtype(np.float32)


def checked_actions(actions: Any, spec: EnvSpec, num_envs: int) -> np.ndarray:
    """`actions` as int32 [N] or float32 [N, A], refusing a shape that would silently broadcast."""
    actions = np.asarray(actions)
    if spec.action_kind == "discrete":
        expected: Tuple[int, ...] = (num_envs,)
        dtype: type = np.int32
    else:
        expected = (num_envs, spec.num_actions)
        dtype = np.float32
    if actions.shape != expected:
        raise ValueError(f"actions have shape {actions.shape}, expected {expected}")
    return actions.astype(dtype, copy=False)


def _envpool(
    scenario: str, num_envs: int, seed: int, max_episode_steps: int | None, **kwargs: Any
) -> HostVectorEnv:
    from stoix.wrappers.host_envpool import EnvpoolHostEnv

    return EnvpoolHostEnv(scenario, num_envs, seed, max_episode_steps, **kwargs)


def _gymnasium(
    scenario: str, num_envs: int, seed: int, max_episode_steps: int | None, **kwargs: Any
) -> HostVectorEnv:
    from stoix.wrappers.host_gymnasium import GymnasiumHostEnv

    return GymnasiumHostEnv(scenario, num_envs, seed, max_episode_steps, **kwargs)


# Imports are deferred so a run only pays for the suite it uses.
HOST_SUITES: Dict[str, Callable[..., HostVectorEnv]] = {
    "envpool": _envpool,
    "gymnasium": _gymnasium,
}


def _kwargs_without_seed(env_cfg: DictConfig) -> Dict[str, Any]:
    """`env.kwargs` without its `seed`, resolved key by key.

    The seed comes from the caller (each actor seeds its own envs). Dropping it before resolving
    lets an Anakin config such as envpool/pong.yaml (`seed: ${arch.seed}`) be used on its own.
    """
    raw = env_cfg.get("kwargs")
    if not raw:
        return {}
    kwargs: Dict[str, Any] = {}
    for key in raw:
        if key == "seed":
            continue
        value = raw[key]
        kwargs[str(key)] = (
            OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        )
    return kwargs


def make_host_env(env_cfg: DictConfig, num_envs: int, seed: int) -> HostVectorEnv:
    """`num_envs` host environments of the `env` config, seeded from `seed`."""
    suite = str(env_cfg.suite)
    if suite not in HOST_SUITES:
        raise ConfigError(
            f"env.suite='{suite}' has no host (Sebulba) adapter; choose one of "
            f"{sorted(HOST_SUITES)}"
        )
    if num_envs <= 0:
        raise ValueError(f"num_envs={num_envs} must be positive")
    cap = env_cfg.get("max_episode_steps")
    if cap is not None and int(cap) <= 0:
        raise ConfigError(f"env.max_episode_steps={cap} must be a positive integer or null")
    kwargs = _kwargs_without_seed(env_cfg)
    scenario = str(env_cfg.scenario)
    try:
        return HOST_SUITES[suite](
            scenario, num_envs, int(seed), int(cap) if cap is not None else None, **kwargs
        )
    except ImportError as err:
        raise ConfigError(
            f"env.suite='{suite}' with env.scenario='{scenario}' needs a package that is not "
            f"installed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    except (KeyError, ValueError, NotImplementedError, AttributeError, TypeError) as err:
        raise ConfigError(
            f"env.scenario='{scenario}' could not be made by the {suite} suite: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
