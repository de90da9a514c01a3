"""Adapter from gymnax environments to the Stoix suite-adapter interface.

gymnax's own `step` auto-resets and so loses the true final observation of a truncated
episode; this adapter calls `step_env` and leaves auto-reset to `EpisodeEnv`.
"""

from typing import Any, Tuple

from stoix.utils.deferred_imports import defer_imports

# Only gymnax's render methods use these; importing them costs every run ~2 s of start-up.
defer_imports("seaborn", "matplotlib.pyplot")

import gymnax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from gymnax.environments import spaces  # noqa: E402

from stoix.base_types import Action, EnvSpec, Observation, PRNGKey  # noqa: E402
from stoix.wrappers.episode import AdapterStep  # noqa: E402

GYMNAX_TASKS = {
    "cartpole": "CartPole-v1",
    "acrobot": "Acrobot-v1",
    "mountain_car": "MountainCar-v0",
    "pendulum": "Pendulum-v1",
    "mountain_car_continuous": "MountainCarContinuous-v0",
    "asterix": "Asterix-MinAtar",
    "breakout": "Breakout-MinAtar",
    "freeway": "Freeway-MinAtar",
    "space_invaders": "SpaceInvaders-MinAtar",
}


class GymnaxAdapter:
    def __init__(self, scenario: str, **env_kwargs: Any):
        self._env, self._params = gymnax.make(scenario, **env_kwargs)
        obs_space = self._env.observation_space(self._params)
        action_space = self._env.action_space(self._params)
        if isinstance(action_space, spaces.Discrete):
            action_kind, num_actions = "discrete", int(action_space.n)
            minimum = maximum = None
        else:
            action_kind, num_actions = "continuous", int(np.prod(action_space.shape))
            minimum = tuple(np.broadcast_to(action_space.low, (num_actions,)).tolist())
            maximum = tuple(np.broadcast_to(action_space.high, (num_actions,)).tolist())
        self._num_actions = num_actions
        self._discrete = action_kind == "discrete"
        self.spec = EnvSpec(
            observation_shape=tuple(obs_space.shape),
            action_kind=action_kind,
            num_actions=num_actions,
            action_minimum=minimum,
            action_maximum=maximum,
            max_episode_steps=int(self._params.max_steps_in_episode),
        )

    def _observation(self, obs: jax.Array, state: Any) -> Observation:
        return Observation(
            agent_view=obs.astype(jnp.float32),
            action_mask=jnp.ones((self._num_actions,), bool),
            step_count=jnp.asarray(state.time, jnp.int32),
        )

    def reset(self, key: PRNGKey) -> Tuple[Any, Observation]:
        obs, env_state = self._env.reset_env(key, self._params)
        return env_state, self._observation(obs, env_state)

    def step(self, state: Any, action: Action, key: PRNGKey) -> Tuple[Any, AdapterStep]:
        if not self._discrete:
            action = jnp.reshape(action, self._env.action_space(self._params).shape)
        obs, env_state, reward, terminated, _ = self._env.step_env(key, state, action, self._params)
        truncated = self._env.is_truncated(env_state, self._params)
        return env_state, AdapterStep(
            observation=self._observation(obs, env_state),
            reward=jnp.asarray(reward, jnp.float32),
            terminated=jnp.asarray(terminated, bool),
            truncated=jnp.asarray(truncated, bool),
        )
