"""Small memory tasks of our own: solvable only by an agent that remembers earlier observations.

popjym is not installable from the package registry, so the recurrent systems are checked on
this suite instead (`env=memory/recall`).

Recall: the first observation shows one of `num_cues` cues (one-hot); the next `delay`
observations are blank; then a query flag asks for the cue. Answering it with the cue's action
earns 1 and ends the episode; any other answer earns 0 and ends it too. Actions before the query
do nothing. A memoryless policy sees the same blank-plus-query observation whatever the cue was,
so its expected return is at most 1 / num_cues; remembering the cue earns 1.
"""

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

from stoix.base_types import Action, EnvSpec, Observation, PRNGKey
from stoix.wrappers.episode import AdapterStep


class RecallState(NamedTuple):
    cue: jax.Array  # () int32, the action that earns the reward at the query
    step_count: jax.Array  # () int32, steps taken in the episode


class RecallAdapter:
    """The recall task behind the Stoix `SuiteAdapter` interface.

    Observations are `num_cues + 1` floats: the cue's one-hot at step 0, zeros during the
    delay, and the query flag (last entry) at step `delay + 1`.

    Args:
        num_cues: how many cues (and actions) there are; at least 2.
        delay: blank steps between the cue and the query; at least 0.
    """

    def __init__(self, num_cues: int = 4, delay: int = 8):
        if int(num_cues) < 2:
            raise ValueError(f"recall needs num_cues >= 2, got {num_cues}")
        if int(delay) < 0:
            raise ValueError(f"recall needs delay >= 0, got {delay}")
        self.num_cues = int(num_cues)
        self.delay = int(delay)
        self.spec = EnvSpec(
            observation_shape=(self.num_cues + 1,),
            action_kind="discrete",
            num_actions=self.num_cues,
            max_episode_steps=self.delay + 2,
        )

    def _observation(self, state: RecallState) -> Observation:
        at_cue = state.step_count == 0
        at_query = state.step_count == self.delay + 1
        cue_view = jax.nn.one_hot(state.cue, self.num_cues) * at_cue
        view = jnp.concatenate([cue_view, at_query[None].astype(jnp.float32)])
        return Observation(
            agent_view=view,
            action_mask=jnp.ones((self.num_cues,), bool),
            step_count=state.step_count,
        )

    def reset(self, key: PRNGKey) -> Tuple[RecallState, Observation]:
        cue = jax.random.randint(key, (), 0, self.num_cues, jnp.int32)
        state = RecallState(cue, jnp.zeros((), jnp.int32))
        return state, self._observation(state)

    def step(
        self, state: RecallState, action: Action, key: PRNGKey
    ) -> Tuple[RecallState, AdapterStep]:
        del key  # the task is deterministic once the cue is drawn
        answered = state.step_count == self.delay + 1
        reward = jnp.where(answered & (action == state.cue), 1.0, 0.0).astype(jnp.float32)
        state = RecallState(state.cue, state.step_count + 1)
        return state, AdapterStep(
            observation=self._observation(state),
            reward=reward,
            terminated=answered,
            truncated=jnp.zeros((), bool),
        )
