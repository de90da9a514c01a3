"""Adapter from jumanji environments to the Stoix suite-adapter interface.

The adapter calls jumanji's own `env.step` (no jumanji AutoReset wrapper): `EpisodeEnv` resets.
A jumanji LAST step with discount 0 is a termination and with a non-zero discount a truncation.

Most jumanji envs with a `time_limit` (Snake, Maze, Tetris, PacMan, ...) report reaching it as a
termination (discount 0), which would forbid bootstrapping through a time-out. So the adapter
takes the limit over: it builds the env with its limit one step later than asked, and itself
reports truncation at the asked step. Jumanji's own limit is then never reached as long as the
caller resets after a truncation, which `EpisodeEnv` does.
"""

import inspect
from typing import Any, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import jumanji
import numpy as np
from jumanji import specs
from jumanji.types import StepType as JumanjiStepType

from stoix.base_types import Action, EnvSpec, Observation, PRNGKey
from stoix.wrappers.episode import AdapterStep

# Which field of a jumanji observation the networks consume, by env class. Snake's grid is
# (rows, cols, 5) one-hot-like feature planes (body, head, tail, fruit, body order); the 2048
# board is (size, size) tile exponents (0 empty, k for a tile of value 2**k).
AGENT_VIEW_FIELDS = {
    "Snake": "grid",
    "Game2048": "board",
}

# Envs without a time limit (Game2048 ends only when no move is legal) still need a finite
# episode for evaluation. Random play ends a 2048 game in ~100 moves and a strong agent's
# game to the 4096 tile takes a few thousand, so this cap only stops runaway episodes.
DEFAULT_MAX_EPISODE_STEPS = 10_000

# Observation fields that are not part of the board or grid the agent looks at.
_NON_VIEW_FIELDS = ("action_mask", "step_count")


class JumanjiState(NamedTuple):
    env_state: Any  # the jumanji env's own state; it carries the simulator's key
    step_count: jax.Array  # () int32, steps taken in the current episode


class JumanjiAdapter:
    """A jumanji environment with a discrete action behind the Stoix `SuiteAdapter` interface.

    The agent view is the observation field named in `AGENT_VIEW_FIELDS` (or the only field
    besides the action mask and step count), cast to float32. The action mask is jumanji's own
    when the observation has one, else all True.

    Args:
        scenario: jumanji registry id, e.g. "Snake-v1" or "Game2048-v1".
        **env_kwargs: passed to `jumanji.make`.

    Raises:
        ValueError: the env's action is not a single discrete choice, or no agent-view field is
            known for its observation.
    """

    def __init__(self, scenario: str, **env_kwargs: Any):
        env = jumanji.make(scenario, **env_kwargs)
        self._time_limit = _owned_time_limit(env)
        if self._time_limit is not None:
            env = jumanji.make(scenario, **{**env_kwargs, "time_limit": self._time_limit + 1})
        self._env = env

        action_spec = env.action_spec
        if not isinstance(action_spec, specs.DiscreteArray):
            raise ValueError(
                f"Jumanji env {scenario} has a {type(action_spec).__name__} action; the jumanji "
                "adapter supports a single discrete action (DiscreteArray) only."
            )
        self._num_actions = int(action_spec.num_values)

        # eval_shape traces reset without running it, which is all the spec needs.
        _, first = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        self._view_field = _agent_view_field(scenario, type(env).__name__, first.observation)
        self._has_mask = hasattr(first.observation, "action_mask")
        view_shape = tuple(getattr(first.observation, self._view_field).shape)
        self.spec = EnvSpec(
            observation_shape=view_shape,
            action_kind="discrete",
            num_actions=self._num_actions,
            max_episode_steps=self._time_limit or DEFAULT_MAX_EPISODE_STEPS,
        )

    def _observation(self, jumanji_obs: Any, step_count: jax.Array) -> Observation:
        if self._has_mask:
            action_mask = jnp.asarray(jumanji_obs.action_mask, bool)
        else:
            action_mask = jnp.ones((self._num_actions,), bool)
        return Observation(
            agent_view=jnp.asarray(getattr(jumanji_obs, self._view_field), jnp.float32),
            action_mask=action_mask,
            step_count=step_count,
        )

    def reset(self, key: PRNGKey) -> Tuple[JumanjiState, Observation]:
        env_state, timestep = self._env.reset(key)
        step_count = jnp.zeros((), jnp.int32)
        return JumanjiState(env_state, step_count), self._observation(
            timestep.observation, step_count
        )

    def step(
        self, state: JumanjiState, action: Action, key: PRNGKey
    ) -> Tuple[JumanjiState, AdapterStep]:
        del key  # the simulator is deterministic or keeps its own key
        env_state, timestep = self._env.step(state.env_state, jnp.asarray(action, jnp.int32))
        step_count = state.step_count + 1
        last = timestep.step_type == JumanjiStepType.LAST
        terminated = jnp.logical_and(last, timestep.discount == 0.0)
        truncated = jnp.logical_and(last, timestep.discount != 0.0)
        if self._time_limit is not None:
            truncated = jnp.logical_or(truncated, step_count >= self._time_limit)
        return JumanjiState(env_state, step_count), AdapterStep(
            observation=self._observation(timestep.observation, step_count),
            reward=jnp.asarray(timestep.reward, jnp.float32),
            terminated=terminated,
            truncated=jnp.logical_and(truncated, jnp.logical_not(terminated)),
        )


def _owned_time_limit(env: Any) -> int | None:
    """The env's time limit when the adapter can take it over (it is a constructor argument)."""
    time_limit = getattr(env, "time_limit", None)
    if not isinstance(time_limit, (int, np.integer)):
        return None
    if "time_limit" not in inspect.signature(type(env)).parameters:
        return None
    return int(time_limit)


def _agent_view_field(scenario: str, env_class: str, observation: Any) -> str:
    if env_class in AGENT_VIEW_FIELDS:
        return AGENT_VIEW_FIELDS[env_class]
    fields = [f for f in getattr(observation, "_fields", ()) if f not in _NON_VIEW_FIELDS]
    if len(fields) == 1:
        return fields[0]
    raise ValueError(
        f"Jumanji env {scenario} has observation fields {fields}; add the one the agent should "
        "see to AGENT_VIEW_FIELDS in stoix/wrappers/jumanji.py."
    )
