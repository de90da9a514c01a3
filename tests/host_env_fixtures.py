"""A deterministic gymnasium env for exact checks of the host adapters' episode semantics.

Made through the module-qualified id "tests.host_env_fixtures:HostCounting-v0", so gymnasium
imports this module itself, as it would a user's package.
"""

from typing import Any, Dict, Tuple

import gymnasium
import numpy as np
from gymnasium import spaces


class CountingEnv(gymnasium.Env):
    """Counts steps; the t-th step of an episode (t = 1, 2, ...) has reward t.

    The observation is [steps so far, tag], where the tag is the seed of the env's first reset
    (seed + i for env i of a vector env), so a test can tell envs apart and check their order.
    An episode terminates after `episode_length + tag % 3` steps, so envs end at different times.
    """

    metadata: Dict[str, Any] = {"render_modes": []}

    def __init__(self, episode_length: int = 3):
        self.observation_space = spaces.Box(0.0, 1e6, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._episode_length = episode_length
        self._tag = 0
        self._count = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._count, self._tag], np.float32)

    def reset(
        self, *, seed: int | None = None, options: Dict[str, Any] | None = None
    ) -> Tuple[np.ndarray, Dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._tag = seed
        self._count = 0
        return self._obs(), {}

    def step(self, action: int) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        self._count += 1
        terminated = self._count >= self._episode_length + self._tag % 3
        return self._obs(), float(self._count), terminated, False, {}


gymnasium.register(id="HostCounting-v0", entry_point=CountingEnv)
