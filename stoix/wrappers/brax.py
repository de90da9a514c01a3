"""Adapter from brax environments to the Stoix suite-adapter interface.

The env comes from `brax.envs.get_environment`, not `brax.envs.create`, so brax's own
EpisodeWrapper and AutoResetWrapper are left out: `EpisodeEnv` applies the step cap and resets.
Without the EpisodeWrapper, a brax env's `done` only ever marks a terminal state (a fallen
pendulum, an unhealthy ant); the time limit is never folded into it.
"""

from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp
from brax import envs

from stoix.base_types import Action, EnvSpec, Observation, PRNGKey
from stoix.wrappers.episode import AdapterStep

# Env steps per second through EpisodeEnv (auto-reset included), jit(vmap) over 64 envs, 200-step
# scan, best of several, brax 0.14.2 / jax 0.10.2 on a 2-core CPU:
#   backend       inverted_pendulum  halfcheetah    ant
#   spring              112k            11.1k      14.3k
#   positional           77k             2.9k       3.6k
#   generalized          74k             1.9k       4.8k
#   mjx                  94k             0.8k      10.3k
# None produced NaNs with resets on termination. Spring and positional integrate the pendulum
# at 0.02 s a step, generalized and mjx at 0.04 s, so episodes differ in length across backends.
# mjx is MuJoCo's own physics and the most faithful; on an accelerator it may be the faster one.
DEFAULT_BACKEND = "spring"

# The episode length brax's own training scripts use for its locomotion tasks.
DEFAULT_MAX_EPISODE_STEPS = 1000


class BraxState(NamedTuple):
    env_state: Any  # brax.envs.State: pipeline state, obs, reward, done, metrics, info
    step_count: jax.Array  # () int32, steps taken in the current episode


class BraxAdapter:
    """A brax environment behind the Stoix `SuiteAdapter` interface.

    Actions are continuous in [-1, 1]^A; brax scales them to each actuator's control range.
    The agent view is brax's flat observation vector, as float32. Brax has no action mask, so
    `action_mask` is all True with one entry per action dimension.

    Args:
        scenario: brax registry name, e.g. "inverted_pendulum", "halfcheetah", "ant".
        backend: physics pipeline: "spring", "positional", "generalized" or "mjx".
        **env_kwargs: passed to the brax env constructor.
    """

    def __init__(self, scenario: str, backend: str = DEFAULT_BACKEND, **env_kwargs: Any):
        self._use_env(
            envs.get_environment(scenario, backend=backend, **env_kwargs),
            DEFAULT_MAX_EPISODE_STEPS,
        )

    def _use_env(self, env: Any, max_episode_steps: int) -> None:
        """Adopts any env with brax's interface (`reset(key)`, `step(state, action)`, a state
        with obs/reward/done and `replace`): MuJoCo Playground's envs have it too."""
        self._env = env
        self._action_size = int(env.action_size)
        # eval_shape traces reset without running it: brax's `observation_size` property would
        # run an un-jitted reset, which takes seconds for the larger bodies.
        reset_shape = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        self.spec = EnvSpec(
            observation_shape=tuple(reset_shape.obs.shape),
            action_kind="continuous",
            num_actions=self._action_size,
            action_minimum=(-1.0,) * self._action_size,
            action_maximum=(1.0,) * self._action_size,
            max_episode_steps=max_episode_steps,
        )

    def _observation(self, env_state: Any, step_count: jax.Array) -> Observation:
        return Observation(
            agent_view=env_state.obs.astype(jnp.float32),
            action_mask=jnp.ones((self._action_size,), bool),
            step_count=step_count,
        )

    def reset(self, key: PRNGKey) -> Tuple[BraxState, Observation]:
        env_state = self._env.reset(key)
        step_count = jnp.zeros((), jnp.int32)
        return BraxState(env_state, step_count), self._observation(env_state, step_count)

    def step(self, state: BraxState, action: Action, key: PRNGKey) -> Tuple[BraxState, AdapterStep]:
        del key  # the simulator is deterministic or keeps its own key
        # The mjx backend only clips controls when the model declares actuator limits; clipping
        # here gives every backend the [-1, 1] range the spec promises.
        action = jnp.clip(jnp.reshape(action, (self._action_size,)), -1.0, 1.0)
        env_state = self._env.step(state.env_state, action)
        # Some envs return a Python float reward (inverted_pendulum); fixing the dtype keeps the
        # state's pytree types identical to reset's, as scan carries and jnp.where selects need.
        reward = jnp.asarray(env_state.reward, jnp.float32)
        done = jnp.asarray(env_state.done, jnp.float32)
        env_state = env_state.replace(reward=reward, done=done)
        step_count = state.step_count + 1
        return BraxState(env_state, step_count), AdapterStep(
            observation=self._observation(env_state, step_count),
            reward=reward,
            terminated=done > 0.5,
            # brax envs have no time limit of their own; EpisodeEnv applies the cap.
            truncated=jnp.zeros((), bool),
        )
