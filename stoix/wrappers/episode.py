"""The shared episode logic every suite adapter is wrapped in.

A suite adapter only knows how to reset and step its simulator. `EpisodeEnv` adds, in one
fused pass so the inner loop stays cheap: the episode step cap (truncation), episode return and
length bookkeeping, and auto-reset that keeps the true final observation for bootstrapping.
"""

from typing import Any, Generic, NamedTuple, Protocol, Tuple, TypeVar

import jax
import jax.numpy as jnp

from stoix.base_types import (
    Action,
    EnvSpec,
    EpisodeMetrics,
    Observation,
    PRNGKey,
    StepType,
    TimeStep,
)

AdapterState = TypeVar("AdapterState")


class AdapterStep(NamedTuple):
    """What a suite adapter returns from one step, before any episode logic."""

    observation: Observation
    reward: jax.Array  # () float32
    terminated: jax.Array  # () bool: the MDP reached a terminal state
    truncated: jax.Array  # () bool: the suite's own time limit cut the episode


class SuiteAdapter(Protocol, Generic[AdapterState]):
    """A simulator from one suite behind a pure reset/step pair.

    `EpisodeEnv` owns the randomness and hands each call its key, so one split per env step
    serves both the step and a possible auto-reset (on CPU every threefry call is a rolled loop
    of small kernels, so extra splits inside the inner loop cost real time at few envs).
    Adapters whose simulator is deterministic, or keeps its own key, ignore `key` in `step`.

    An adapter may also define `auto_reset(key)`, used instead of `reset` when an episode ends
    mid-run (e.g. Craftax's optimistic reset, which shares fresh worlds between envs).
    """

    spec: EnvSpec

    def reset(self, key: PRNGKey) -> Tuple[AdapterState, Observation]: ...

    def step(
        self, state: AdapterState, action: Action, key: PRNGKey
    ) -> Tuple[AdapterState, AdapterStep]: ...


class EpisodeState(NamedTuple):
    adapter_state: Any
    key: PRNGKey  # source of the step and auto-reset keys
    step_count: jax.Array  # () int32, steps taken in the current episode
    episode_return: jax.Array  # () float32, return accumulated so far


class EpisodeEnv:
    """Turns a suite adapter into a Stoix `Environment` with auto-reset and episode metrics.

    Args:
        adapter: the suite adapter.
        max_episode_steps: hard cap on episode length; reaching it truncates the episode.
            Defaults to the adapter's own limit.
    """

    def __init__(self, adapter: SuiteAdapter, max_episode_steps: int | None = None):
        self.adapter = adapter
        cap = max_episode_steps or adapter.spec.max_episode_steps
        self.spec = adapter.spec.replace(max_episode_steps=int(cap))
        self.max_episode_steps = int(cap)
        self._auto_reset = getattr(adapter, "auto_reset", adapter.reset)

    def reset(self, key: PRNGKey) -> Tuple[EpisodeState, TimeStep]:
        key, reset_key = jax.random.split(key)
        adapter_state, observation = self.adapter.reset(reset_key)
        state = EpisodeState(
            adapter_state=adapter_state,
            key=key,
            step_count=jnp.zeros((), jnp.int32),
            episode_return=jnp.zeros((), jnp.float32),
        )
        timestep = TimeStep(
            step_type=jnp.asarray(StepType.FIRST, jnp.int8),
            reward=jnp.zeros((), jnp.float32),
            discount=jnp.ones((), jnp.float32),
            observation=observation,
            next_observation=observation,
            metrics=EpisodeMetrics(
                episode_return=jnp.zeros((), jnp.float32),
                episode_length=jnp.zeros((), jnp.int32),
                is_terminal_step=jnp.zeros((), bool),
            ),
        )
        return state, timestep

    def step(self, state: EpisodeState, action: Action) -> Tuple[EpisodeState, TimeStep]:
        return self._step(state, action, auto_reset=True)

    def step_to_end(self, state: EpisodeState, action: Action) -> Tuple[EpisodeState, TimeStep]:
        """`step` without the auto-reset, for loops that stop using an env at its first episode
        end (the evaluator): no reset is computed, which for suites with costly resets (Craftax
        world generation) is most of the step. After an end the state is not meaningful."""
        return self._step(state, action, auto_reset=False)

    def _step(
        self, state: EpisodeState, action: Action, auto_reset: bool
    ) -> Tuple[EpisodeState, TimeStep]:
        key, step_key, reset_key = jax.random.split(state.key, 3)
        adapter_state, out = self.adapter.step(state.adapter_state, action, step_key)
        step_count = state.step_count + 1
        episode_return = state.episode_return + out.reward
        terminated = out.terminated
        # A terminal state wins over a time limit reached on the same step: no bootstrap.
        truncated = jnp.logical_and(
            jnp.logical_or(out.truncated, step_count >= self.max_episode_steps),
            jnp.logical_not(terminated),
        )
        done = jnp.logical_or(terminated, truncated)

        if auto_reset:
            reset_adapter_state, reset_observation = self._auto_reset(reset_key)
            # Selecting between the stepped and the reset state keeps the program branch-free,
            # which under vmap is what lax.cond would compile to anyway.
            next_adapter_state = jax.tree.map(
                lambda r, s: jnp.where(done, r, s), reset_adapter_state, adapter_state
            )
            observation = jax.tree.map(
                lambda r, s: jnp.where(done, r, s), reset_observation, out.observation
            )
        else:
            next_adapter_state, observation = adapter_state, out.observation
        step_type = jnp.where(
            terminated,
            StepType.TERMINATED,
            jnp.where(truncated, StepType.TRUNCATED, StepType.MID),
        ).astype(jnp.int8)
        new_state = EpisodeState(
            adapter_state=next_adapter_state,
            key=key,
            step_count=jnp.where(done, 0, step_count),
            episode_return=jnp.where(done, 0.0, episode_return),
        )
        timestep = TimeStep(
            step_type=step_type,
            reward=out.reward,
            discount=1.0 - terminated.astype(jnp.float32),
            observation=observation,
            next_observation=out.observation,
            metrics=EpisodeMetrics(
                episode_return=episode_return,
                episode_length=step_count,
                is_terminal_step=done,
            ),
        )
        return new_state, timestep
