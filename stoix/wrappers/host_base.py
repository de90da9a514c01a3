"""What Sebulba's host adapters share: episode bookkeeping, action checks, specs from spaces.

Every host adapter meets the same contract of `stoix.wrappers.host` from the same raw material
(a suite's batched, next-step auto-resetting step in env-id order), so the episode bookkeeping,
the action checks and the spec built from gymnasium spaces live here once; `host.py` itself
stays the bare interface, and `host_factory.py` picks the adapter a config names.
"""

from typing import TYPE_CHECKING, Any, NamedTuple, Tuple

import numpy as np

from stoix.base_types import EnvSpec
from stoix.wrappers.host import HostStep

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
