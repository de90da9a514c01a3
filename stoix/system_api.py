"""The contract between systems and runners: what a system hands a runner, and what it gets.

A system file builds its functions from a build context and returns them as parts; the runner
owns everything else (devices, seeds, evaluation, logging, checkpoints). Both sides import this
module, so neither imports the other.

* Anakin: `AnakinSystem.build(BuildContext) -> SystemParts`; every function acts on ONE replica
  and the runner maps it over update batch, seeds and devices.
* Sebulba: `SebulbaSystem.build(SebulbaBuildContext) -> SebulbaParts`; `act` runs on actor
  devices, `learn` on the learner's, over `Rollout`s the actor threads collected.
"""

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Tuple

import jax
from omegaconf import DictConfig

from stoix.base_types import (
    Environment,
    EnvSpec,
    LearnerState,
    Observation,
    Params,
    PRNGKey,
    TrainMetrics,
)
from stoix.evaluator.anakin import EvalActFn
from stoix.utils.config import RunPlan

__all__ = [
    "ActFn",
    "AnakinSystem",
    "BuildContext",
    "EvalActFn",
    "Rollout",
    "SebulbaBuildContext",
    "SebulbaLayout",
    "SebulbaParts",
    "SebulbaSystem",
    "SystemParts",
]

# ANAKIN


class BuildContext(NamedTuple):
    config: DictConfig
    env: Environment
    plan: RunPlan


class SystemParts(NamedTuple):
    """What a system hands the runner; every function acts on ONE replica (no leading axes).

    init_shared: params_key -> what all replicas of a seed share (parameters, optimiser
        states). It runs once per seed on one device, so every replica of a seed starts from
        identical parameters by construction.
    init_state: (shared, replica_key) -> learner state of one replica; replica_key seeds its
        envs and sampling.
    update_step: one update (rollout + learning) of one replica; average gradients with
        `pmean_replicas`.
    actor_params: the parameters the evaluator needs, taken from a learner state.
    eval_act: greedy flag -> act(params, batched observation, key) -> batched actions.
    """

    init_shared: Callable[[PRNGKey, Mapping[str, jax.Array]], Any]
    init_state: Callable[[Any, PRNGKey], LearnerState]
    update_step: Callable[[LearnerState], Tuple[LearnerState, TrainMetrics]]
    actor_params: Callable[[LearnerState], Params]
    eval_act: Callable[[bool], EvalActFn]


@dataclass(frozen=True)
class AnakinSystem:
    name: str
    action_kinds: Tuple[str, ...]
    build: Callable[[BuildContext], SystemParts]
    validate: Callable[[DictConfig, RunPlan], None] = lambda cfg, plan: None
    # Config keys whose values can differ between the runs of one program (`arch.sweep.key`):
    # the system must read them from the state its `init_shared` builds, not from the config.
    sweepable: Tuple[str, ...] = ()


# SEBULBA


@dataclass(frozen=True)
class SebulbaLayout:
    """Which devices act, learn and evaluate (resolved from config by the Sebulba runner)."""

    actor_devices: Tuple[jax.Device, ...]
    actors_per_device: int
    learner_devices: Tuple[jax.Device, ...]
    evaluator_device: jax.Device

    @property
    def num_actors(self) -> int:
        return len(self.actor_devices) * self.actors_per_device

    def actor_device(self, actor: int) -> jax.Device:
        return self.actor_devices[actor // self.actors_per_device]

    def describe(self) -> str:
        ids = lambda devices: ",".join(str(d.id) for d in devices)  # noqa: E731
        return (
            f"{self.num_actors} actor thread(s) on device(s) {ids(self.actor_devices)}, "
            f"learner on device(s) {ids(self.learner_devices)}, evaluator on device "
            f"{self.evaluator_device.id}"
        )


class Rollout(NamedTuple):
    """One actor's rollout, time-major. Steps t < T act on `observation[t]`;
    `observation[T]` is where the next rollout starts (the bootstrap observation)."""

    observation: Observation  # [T + 1, N, ...]
    extras: Any  # [T, N, ...] what the system's `act` kept for learning (e.g. action, log-prob)
    reward: jax.Array  # [T, N]
    terminated: jax.Array  # [T, N] bool
    truncated: jax.Array  # [T, N] bool
    valid: jax.Array  # [T, N] bool; False where the step only reset the env (see wrappers.host)


# A system's batched acting function: (params, observation [N], key) -> (env action [N],
# extras kept for learning, next key). It runs compiled on an actor device.
ActFn = Callable[[Params, Observation, PRNGKey], Tuple[jax.Array, Any, PRNGKey]]


class SebulbaBuildContext(NamedTuple):
    config: DictConfig
    spec: EnvSpec
    plan: RunPlan
    example_observation: Observation  # one env's observation, with a leading axis of 1


class SebulbaParts(NamedTuple):
    """What a Sebulba system hands the runner.

    init_learner: params key -> learner state (parameters, optimiser states, a key).
    actor_params: learner state -> what acting and evaluation need.
    act: batched acting on an actor device (see `ActFn`).
    learn: (learner state, rollout [T, N_local]) -> (learner state, loss info of scalars); it
        runs on each learner device's share of the envs; average gradients with
        `pmean_replicas`.
    eval_act: greedy flag -> (params, observation [N], key) -> actions [N].
    """

    init_learner: Callable[[PRNGKey], Any]
    actor_params: Callable[[Any], Params]
    act: ActFn
    learn: Callable[[Any, Rollout], Tuple[Any, Any]]
    eval_act: Callable[[bool], Callable[[Params, Observation, PRNGKey], jax.Array]]


@dataclass(frozen=True)
class SebulbaSystem:
    name: str
    action_kinds: Tuple[str, ...]
    build: Callable[[SebulbaBuildContext], SebulbaParts]
    validate: Callable[[DictConfig, RunPlan, SebulbaLayout], None] = lambda cfg, plan, layout: None
