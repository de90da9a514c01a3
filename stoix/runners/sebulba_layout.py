"""Sebulba's layout and plan: which devices act, learn and evaluate, and the timestep plan.

Actor threads take the role of Anakin's devices in the run plan: `arch.total_num_envs` is split
over them, and one update consumes one rollout of every actor.
"""

from typing import Any, List, Sequence

import jax
from omegaconf import DictConfig, OmegaConf

from stoix.errors import ConfigError
from stoix.system_api import SebulbaLayout
from stoix.utils.config import RunPlan, make_run_plan


def _device_ids(ids: Any, key: str, devices: Sequence[jax.Device]) -> List[int] | None:
    if ids is None:
        return None
    if isinstance(ids, int):
        ids = [ids]
    try:
        as_ints = [int(i) for i in ids]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}={ids!r} must be a list of device ids") from err
    if not as_ints:
        raise ConfigError(f"{key} must name at least one device")
    if len(set(as_ints)) != len(as_ints):
        raise ConfigError(f"{key}={as_ints} names a device twice")
    for i in as_ints:
        if not 0 <= i < len(devices):
            raise ConfigError(
                f"{key} names device {i} but this machine has {len(devices)} device(s) "
                f"(ids 0–{len(devices) - 1})"
            )
    return as_ints


def resolve_layout(cfg: DictConfig, devices: Sequence[jax.Device]) -> SebulbaLayout:
    """The devices of each role. Unset ids: actors on the first device, the learner on all the
    others (on a one-device machine both share it), evaluation on the first actor device."""
    arch = cfg.arch
    actor_ids = _device_ids(arch.actor.device_ids, "arch.actor.device_ids", devices)
    learner_ids = _device_ids(arch.learner.device_ids, "arch.learner.device_ids", devices)
    if actor_ids is None:
        actor_ids = [0]
    if learner_ids is None:
        learner_ids = [i for i in range(len(devices)) if i not in actor_ids] or [0]
    evaluator_id = arch.evaluator_device_id
    if evaluator_id is None:
        evaluator_id = actor_ids[0]
    if not 0 <= int(evaluator_id) < len(devices):
        raise ConfigError(
            f"arch.evaluator_device_id={evaluator_id} is not a device of this machine "
            f"({len(devices)} device(s))"
        )
    per_device = arch.actor.actor_per_device
    if per_device is None or int(per_device) < 1:
        raise ConfigError(f"arch.actor.actor_per_device={per_device!r} must be at least 1")
    return SebulbaLayout(
        actor_devices=tuple(devices[i] for i in actor_ids),
        actors_per_device=int(per_device),
        learner_devices=tuple(devices[i] for i in learner_ids),
        evaluator_device=devices[int(evaluator_id)],
    )


def make_sebulba_plan(cfg: DictConfig, layout: SebulbaLayout) -> RunPlan:
    """The timestep checker's Sebulba branch: `arch.total_num_envs` is split over the actor
    threads; one update consumes one rollout of every actor, i.e. total envs × rollout steps."""
    for key in ("num_seeds", "update_batch_size"):
        if cfg.arch[key] != 1:
            raise ConfigError(
                f"arch.{key} must be 1 with arch=sebulba (one run per process; launch seeds as "
                "separate runs)"
            )
    # Systems without observation normalisation have no such key.
    if OmegaConf.select(cfg, "system.normalise_observations", default=False):
        raise ConfigError(
            "system.normalise_observations=True is not supported with arch=sebulba yet"
        )
    if "sweep" in cfg.arch and cfg.arch.sweep.key is not None:
        raise ConfigError("arch.sweep is an Anakin feature; with arch=sebulba use a Hydra sweep")
    # Actor threads take the role of Anakin's devices: the envs must split evenly over them.
    plan = make_run_plan(cfg, layout.num_actors)
    if plan.total_num_envs % len(layout.learner_devices):
        raise ConfigError(
            f"arch.total_num_envs={plan.total_num_envs} is not divisible by the "
            f"{len(layout.learner_devices)} learner device(s) (arch.learner.device_ids)"
        )
    return plan


def describe_plan(plan: RunPlan, layout: SebulbaLayout) -> str:
    return (
        f"{plan.total_steps:,} env steps = {plan.num_evaluation} evaluations × "
        f"{plan.updates_per_evaluation} updates × {plan.steps_per_update:,} steps "
        f"({plan.total_num_envs} envs = {layout.num_actors} actor thread(s) × "
        f"{plan.envs_per_replica}, × {plan.rollout_length} rollout); {layout.describe()}"
    )
