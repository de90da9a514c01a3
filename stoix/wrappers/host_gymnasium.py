"""Any registered gymnasium env on the host for Sebulba actors, through `gymnasium.make_vec`.

gymnasium's vector envs may auto-reset in three ways; `HostVectorEnv` is defined on the
"next-step" one (the final observation is returned, the following step resets), so it is asked
for explicitly and checked on the made env, since a custom vector entry point picks its own.
Ids may name a module to import first ("package.module:Env-v0"); "ALE/..." ids import ale-py,
which registers the Atari envs, only when such an id is asked for.
"""

from typing import Any

import numpy as np

from stoix.wrappers.host import HostStep
from stoix.wrappers.host_base import (
    HostEpisodes,
    SuiteStep,
    checked_actions,
    observation_dtype,
    spec_from_spaces,
)

# EnvSpec needs a cap even where the env has none; it is only reported, never enforced here.
_UNCAPPED_MAX_EPISODE_STEPS = 1000


def _register_ale() -> None:
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)


def _registered_cap(env_spec: Any) -> int | None:
    """The episode cap in agent steps that the made env enforces itself, if any."""
    if env_spec is None:
        return None
    if env_spec.max_episode_steps is not None:
        return int(env_spec.max_episode_steps)
    # ALE ids have no TimeLimit: the emulator truncates after a number of frames instead.
    frames = env_spec.kwargs.get("max_num_frames_per_episode")
    frameskip = env_spec.kwargs.get("frameskip", 1)
    if isinstance(frames, int) and frames > 0 and isinstance(frameskip, int):
        return frames // frameskip
    return None


class GymnasiumHostEnv:
    """A `HostVectorEnv` over `gymnasium.make_vec`.

    Args:
        env_id: a registered id, e.g. "CartPole-v1", "ALE/Pong-v5" or "my.module:MyEnv-v0".
        num_envs: envs in the vector env.
        seed: the first `reset` seeds env i with seed + i; later resets continue their streams.
        max_episode_steps: time limit in steps (truncation); None keeps the registered one.
        vectorization: "sync" (one process), "async" (one process per env) or
            "vector_entry_point" (the env's own vectorised implementation, if it has one).
        **make_kwargs: passed to each env's constructor.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int,
        max_episode_steps: int | None = None,
        vectorization: str = "sync",
        **make_kwargs: Any,
    ):
        import gymnasium
        from gymnasium.vector import AutoresetMode

        if num_envs <= 0:
            raise ValueError(f"num_envs={num_envs} must be positive")
        if env_id.startswith("ALE/"):
            _register_ale()
        if max_episode_steps is not None:
            make_kwargs["max_episode_steps"] = int(max_episode_steps)
        # A vector entry point takes no vector_kwargs; its mode is checked below instead.
        vector_kwargs: dict = (
            {}
            if vectorization == "vector_entry_point"
            else {"autoreset_mode": AutoresetMode.NEXT_STEP}
        )
        if vectorization == "async":
            # Forking a process that runs JAX's threads can deadlock the child; spawned workers
            # start clean (the env constructors travel through cloudpickle).
            vector_kwargs["context"] = "spawn"
        try:
            env = gymnasium.make_vec(
                env_id,
                num_envs=num_envs,
                vectorization_mode=vectorization,
                vector_kwargs=vector_kwargs,
                **make_kwargs,
            )
        except gymnasium.error.DependencyNotInstalled as err:
            raise ImportError(str(err).splitlines()[0]) from err
        except gymnasium.error.Error as err:
            raise ValueError(str(err).splitlines()[0]) from err
        self._env: Any = env
        try:
            mode = env.metadata.get("autoreset_mode")
            if mode != AutoresetMode.NEXT_STEP:
                raise ValueError(
                    f"'{env_id}' with vectorization='{vectorization}' auto-resets in mode {mode}; "
                    f"host envs need {AutoresetMode.NEXT_STEP}"
                )
            observation_space = env.single_observation_space
            action_space = env.single_action_space
            cap = max_episode_steps or _registered_cap(env.spec)
            self.spec = spec_from_spaces(
                observation_space,
                action_space,
                observation_shape=tuple(int(d) for d in observation_space.shape),
                max_episode_steps=int(cap or _UNCAPPED_MAX_EPISODE_STEPS),
            )
            self._obs_dtype = observation_dtype(observation_space)
            # Policies choose among 0..n-1; a Discrete space may be numbered from `start`.
            self._action_start = int(getattr(action_space, "start", 0))
        except Exception:
            env.close()
            raise
        self.num_envs = num_envs
        self._seed = int(seed)
        self._seeded = False
        self._episodes = HostEpisodes(num_envs, self.spec.num_actions)
        self._started = False

    def _live_env(self) -> Any:
        if self._env is None:
            raise RuntimeError("this GymnasiumHostEnv is closed")
        return self._env

    def reset(self) -> HostStep:
        env = self._live_env()
        # Seeding again at every reset would replay the same episodes at each evaluation.
        observation, _ = env.reset(seed=None if self._seeded else self._seed)
        self._seeded = True
        self._started = True
        return self._episodes.first(np.asarray(observation, self._obs_dtype))

    def step(self, actions: np.ndarray) -> HostStep:
        env = self._live_env()
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = checked_actions(actions, self.spec, self.num_envs)
        if self._action_start:
            actions = actions + self._action_start
        observation, reward, terminated, truncated, _ = env.step(actions)
        reward = np.asarray(reward, np.float64)
        terminated = np.asarray(terminated, bool)
        return self._episodes.step(
            SuiteStep(
                observation=np.asarray(observation, self._obs_dtype),
                reward=reward.astype(np.float32),
                terminated=terminated,
                truncated=np.asarray(truncated, bool),
                game_over=terminated,
                score=reward,
            )
        )

    def close(self) -> None:
        if self._env is not None:
            env, self._env = self._env, None
            env.close()
