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
# (actor carry, observation [N], key or keys) -> (actor carry, env action [N], what is kept)
ActStep = Callable[[Any, Observation, PRNGKey], Tuple[Any, jax.Array, Any]]
# (observation acted on [N], kept, timestep after the step [N]) -> the step's record
RecordStep = Callable[[Observation, Any, TimeStep], Record]
# (actor carry, timestep after the step [N]) -> the actor carry the next step starts from
AfterStep = Callable[[Any, TimeStep], Any]


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
    keys_per_step: int = 1,
    after_step: AfterStep | None = None,
) -> Tuple[RolloutEnd, Record]:
    """Steps all envs `length` times; returns where it ended and the time-major [T, N] records.

    Args:
        keys_per_step: how many fresh keys `act` gets at every step, split off the carried key
            in one split (e.g. a noisy network's noise and ε-greedy's draw); `act` receives one
            key when this is 1, else a tuple of them.
        after_step: (actor carry, timestep) -> actor carry, for an actor whose carry depends on
            what the step did (a recurrent actor resets its memory where an episode ended).
    """

    def step(carry: RolloutEnd, _: None) -> Tuple[RolloutEnd, Record]:
        key, env_state, observation, actor_carry = carry
        key, *act_keys = jax.random.split(key, 1 + keys_per_step)
        act_key = act_keys[0] if keys_per_step == 1 else tuple(act_keys)
        actor_carry, env_action, kept = act(actor_carry, observation, act_key)
        env_state, timestep = jax.vmap(env.step)(env_state, env_action)
        if after_step is not None:
            actor_carry = after_step(actor_carry, timestep)
        end = RolloutEnd(key, env_state, timestep.observation, actor_carry)
        return end, record(observation, kept, timestep)

    return jax.lax.scan(step, start, None, length=length)
