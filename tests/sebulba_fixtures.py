"""gymnasium environments for the Sebulba tests, made by module-qualified id
(`env.scenario=tests.sebulba_fixtures:FailingCartPole-v0`)."""

import os
import threading
import time
from pathlib import Path

import gymnasium
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class FailingCartPole(CartPoleEnv):
    """CartPole whose `fail_at`-th step in an actor thread raises, as a crashing simulator would.

    `fail_at` comes from the constructor or else the STOIX_TEST_FAIL_AT environment variable
    (so two runs of one config can differ in it); without either the env never fails. Only
    actor threads fail, so the test knows which thread the failure comes from.
    """

    def __init__(self, fail_at: int | None = None, crash_marker: str | None = None, **kwargs):
        super().__init__(**kwargs)
        from_env = os.environ.get("STOIX_TEST_FAIL_AT")
        self._fail_at = fail_at or (int(from_env) if from_env else None)
        self._crash_marker = crash_marker
        self._steps = 0

    def step(self, action):
        if threading.current_thread().name.startswith("actor-"):
            self._steps += 1
        if self._fail_at is not None and self._steps >= self._fail_at:
            if self._crash_marker:
                Path(self._crash_marker).write_text(repr(time.time()))
            raise RuntimeError(f"simulated simulator crash at step {self._steps}")
        return super().step(action)


gymnasium.register("FailingCartPole-v0", entry_point=FailingCartPole, max_episode_steps=500)
