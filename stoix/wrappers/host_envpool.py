"""envpool on the host for Sebulba actors: one synchronous pool of `num_envs` envs.

The pool's batch is all of its envs (`batch_size=num_envs`), so each `step` waits for every env;
envpool returns them in completion order, and they are put back in env-id order here. Atari
tasks get the same settings and metrics as the Anakin adapter (`stoix.wrappers.envpool`): the
training reward is clipped, with `episodic_life` a lost life terminates the episode, while the
episode statistics count whole games of the unclipped score (envpool's `info["reward"]`) and
`episode_done` marks a game over (`info["terminated"]`) or the step cap.
"""

import difflib
import warnings
from typing import Any

import numpy as np

from stoix.wrappers.envpool import ATARI_DEFAULTS
from stoix.wrappers.host import HostStep
from stoix.wrappers.host_base import (
    HostEpisodes,
    SuiteStep,
    checked_actions,
    observation_dtype,
    spec_from_spaces,
)

# envpool builds its gymnasium spaces (lazily, on every access) with float64 bounds for float32
# observations, and gymnasium warns each time; the cast loses nothing we use.
warnings.filterwarnings("ignore", message=".*precision lowered by casting", category=UserWarning)


def _is_atari(task_id: str) -> bool:
    from envpool.registration import registry

    entry = registry.specs.get(task_id)
    return entry is not None and entry[0] == "envpool.atari"


class EnvpoolHostEnv:
    """A `HostVectorEnv` over one envpool pool.

    Args:
        task_id: envpool's id, e.g. "Pong-v5" or "CartPole-v1".
        num_envs: envs in the pool, stepped together.
        seed: envpool seeds env i with seed + i.
        max_episode_steps: envpool's episode cap in agent steps (truncation); None keeps the task's.
        **make_kwargs: passed to `envpool.make`; for Atari they override `ATARI_DEFAULTS`.
    """

    def __init__(
        self,
        task_id: str,
        num_envs: int,
        seed: int,
        max_episode_steps: int | None = None,
        **make_kwargs: Any,
    ):
        import envpool

        known = envpool.list_all_envs()
        if task_id not in known:
            close = difflib.get_close_matches(task_id, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"envpool has no task '{task_id}'{hint}")
        if num_envs <= 0:
            raise ValueError(f"num_envs={num_envs} must be positive")
        self._atari = _is_atari(task_id)
        kwargs = {**ATARI_DEFAULTS, **make_kwargs} if self._atari else dict(make_kwargs)
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = int(max_episode_steps)
        self._pool: Any = envpool.make(
            task_id,
            env_type="gymnasium",
            num_envs=num_envs,
            batch_size=num_envs,
            seed=int(seed),
            **kwargs,
        )
        try:
            observation_space = self._pool.observation_space
            shape = tuple(int(d) for d in observation_space.shape)
            if self._atari:
                channels, height, width = shape
                # envpool stacks frames as [C, H, W]; the CNN torsos read [H, W, C].
                shape = (height, width, channels)
            self._obs_dtype = observation_dtype(observation_space)
            self.spec = spec_from_spaces(
                observation_space,
                self._pool.action_space,
                observation_shape=shape,
                max_episode_steps=int(self._pool.spec.config.max_episode_steps),
            )
        except Exception:
            self._pool.close()
            raise
        self.num_envs = num_envs
        self._env_ids = np.arange(num_envs, dtype=np.int32)
        self._episodes = HostEpisodes(num_envs, self.spec.num_actions)
        self._started = False

    def _observation(self, frames: np.ndarray, order: np.ndarray) -> np.ndarray:
        frames = frames[order]
        if self._atari:
            frames = np.ascontiguousarray(np.moveaxis(frames, 1, -1))
        return frames.astype(self._obs_dtype, copy=False)

    def _live_pool(self) -> Any:
        if self._pool is None:
            raise RuntimeError("this EnvpoolHostEnv is closed")
        return self._pool

    def reset(self) -> HostStep:
        frames, info = self._live_pool().reset(self._env_ids)
        self._started = True
        return self._episodes.first(self._observation(frames, np.argsort(info["env_id"])))

    def step(self, actions: np.ndarray) -> HostStep:
        pool = self._live_pool()
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = checked_actions(actions, self.spec, self.num_envs)
        frames, reward, terminated, truncated, info = pool.step(actions, self._env_ids)
        order = np.argsort(info["env_id"])
        terminated = np.asarray(terminated, bool)[order]
        if self._atari:
            game_over = np.asarray(info["terminated"], bool)[order]
            score = np.asarray(info["reward"], np.float64)[order]
        else:
            game_over = terminated
            score = np.asarray(reward, np.float64)[order]
        return self._episodes.step(
            SuiteStep(
                observation=self._observation(frames, order),
                reward=np.asarray(reward, np.float32)[order],
                terminated=terminated,
                truncated=np.asarray(truncated, bool)[order],
                game_over=game_over,
                score=score,
            )
        )

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
