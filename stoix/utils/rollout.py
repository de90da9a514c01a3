"""The one rollout loop: every env of a replica stepped `length` times inside one `lax.scan`.

Each system says how it acts and what it keeps of a step; the loop is the same for all. Only
the key, the env state, the last observation and the actor's own carry (a recurrent hidden
state; `()` for memoryless actors) are carried from step to step. Every carried array is one more
copy per env step, which is most of the loop's cost at a handful of envs, so anything a system
needs for learning goes into the stacked per-step record instead.
"""

from typing import Any, Callable, NamedTuple, Tuple, TypeVar

import jax

from stoix.base_types import Environment, Observation, PRNGKey, TimeStep

Record = TypeVar("Record")
# (actor carry, observation [N], key) -> (actor carry, env action [N], what the system keeps)
ActStep = Callable[[Any, Observation, PRNGKey], Tuple[Any, jax.Array, Any]]
# (observation acted on [N], kept, timestep after the step [N]) -> the step's record
RecordStep = Callable[[Observation, Any, TimeStep], Record]


class RolloutEnd(NamedTuple):
    """Where the next rollout continues from."""

    key: PRNGKey
    env_state: Any
    observation: Observation
    actor_carry: Any


def env_rollout(
    env: Environment,
    act: ActStep,
    record: RecordStep,
    start: RolloutEnd,
    length: int,
) -> Tuple[RolloutEnd, Record]:
    """Steps all envs `length` times; returns where it ended and the time-major [T, N] records.

    A fresh act key is split off the carried key at every step.
    """

    def step(carry: RolloutEnd, _: None) -> Tuple[RolloutEnd, Record]:
        key, env_state, observation, actor_carry = carry
        key, act_key = jax.random.split(key)
        actor_carry, env_action, kept = act(actor_carry, observation, act_key)
        env_state, timestep = jax.vmap(env.step)(env_state, env_action)
        end = RolloutEnd(key, env_state, timestep.observation, actor_carry)
        return end, record(observation, kept, timestep)

    return jax.lax.scan(step, start, None, length=length)
