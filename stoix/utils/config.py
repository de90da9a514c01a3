"""Config validation and the derived run plan, settled once before anything compiles.

Every check raises `ConfigError` with one sentence naming the offending key; the entry point
prints it on one line and exits non-zero before writing anything.
"""

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stoix.errors import ConfigError
from stoix.utils.schema import validate_config

__all__ = ["ConfigError", "RunPlan", "check_divides", "check_range", "make_run_plan", "to_plain"]


@dataclass(frozen=True)
class RunPlan:
    """Values derived from the config, computed once and never mutated.

    Per seed, one update consumes `steps_per_update` env steps spread over devices × update
    batch × envs; learning is cut into `num_evaluation` periods of `updates_per_evaluation`.
    """

    num_devices: int
    num_seeds: int  # seeds per swept value
    num_runs: int  # independent runs in one program: seeds × swept values
    sweep_key: str | None  # the swept hyperparameter (dotted config key), if any
    sweep_values: tuple[float, ...]  # its values; run r uses sweep_values[r // num_seeds]
    update_batch_size: int
    total_num_envs: int  # per seed, summed over devices and update batch
    envs_per_replica: int  # one device × one update-batch slot
    rollout_length: int
    steps_per_update: int
    num_updates: int
    num_evaluation: int
    updates_per_evaluation: int
    total_steps: int  # env steps that will actually run, per seed
    requested_steps: int  # what the config asked for (for the warning)
    num_eval_episodes: int
    eval_episodes_per_device: int
    replica_label: str = "device(s)"  # what num_devices counts: devices, or Sebulba's actor threads

    @property
    def steps_per_evaluation(self) -> int:
        return self.updates_per_evaluation * self.steps_per_update

    def describe(self) -> str:
        return (
            f"{self.total_steps:,} env steps per seed = {self.num_evaluation} evaluations × "
            f"{self.updates_per_evaluation} updates × {self.steps_per_update:,} steps "
            f"({self.total_num_envs} envs × {self.rollout_length} rollout) on "
            f"{self.num_devices} {self.replica_label}, {self.num_seeds} seed(s), update batch "
            f"{self.update_batch_size}"
            + (
                f", {self.sweep_key} swept over {list(self.sweep_values)} ({self.num_runs} runs)"
                if self.sweep_key
                else ""
            )
        )

    @property
    def num_replicas(self) -> int:
        """Learner replicas of one run: devices × update-batch slots."""
        return self.num_devices * self.update_batch_size

    def steps_per_replica(self, fraction: float) -> int:
        """Env steps one replica takes in `fraction` of training (at least 1), e.g. the length
        of an exploration schedule counted in the replica's own steps."""
        total = fraction * self.num_updates * self.steps_per_update
        return max(1, int(total // self.num_replicas))

    def run_seeds(self, first_seed: int) -> tuple[int, ...]:
        """The seed of every run: all seeds for the first swept value, then for the next…"""
        values = max(1, len(self.sweep_values))
        return tuple(first_seed + s for _ in range(values) for s in range(self.num_seeds))

    def run_sweep_values(self) -> tuple[float, ...]:
        """The swept value of every run (empty without a sweep)."""
        return tuple(v for v in self.sweep_values for _ in range(self.num_seeds))


def _positive_int(cfg: DictConfig, dotted: str, allow_none: bool = False) -> int | None:
    value = OmegaConf.select(cfg, dotted, default=None)
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"{dotted} must be set")
    try:
        as_float = float(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{dotted}={value!r} must be a positive integer") from err
    if not math.isfinite(as_float) or as_float != int(as_float) or as_float <= 0:
        raise ConfigError(f"{dotted}={value!r} must be a positive integer")
    return int(as_float)


def _sweep(cfg: DictConfig) -> tuple[str | None, tuple[float, ...]]:
    key = OmegaConf.select(cfg, "arch.sweep.key", default=None)
    values = OmegaConf.select(cfg, "arch.sweep.values", default=None)
    if values is None:
        values = []
    if isinstance(values, (str, int, float)):
        raise ConfigError(f"arch.sweep.values={values!r} must be a list, e.g. [1e-4,3e-4]")
    if key is None and len(values) == 0:
        return None, ()
    if key is None or not isinstance(key, str) or not key.startswith("system."):
        raise ConfigError(
            f"arch.sweep.key={key!r} must name a system hyperparameter (e.g. system.q_lr) "
            "when arch.sweep.values is set"
        )
    if OmegaConf.select(cfg, key, default=None) is None:
        raise ConfigError(f"arch.sweep.key={key} is not a key of this config")
    if len(values) == 0:
        raise ConfigError(f"arch.sweep.values={values!r} must be a non-empty list of numbers")
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"arch.sweep.values={list(values)!r} must all be numbers") from err
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"arch.sweep.values={list(values)!r} must all be finite")
    # Runs are named by the value printed with 6 significant digits, so those must differ.
    if len({f"{v:g}" for v in numbers}) != len(numbers):
        raise ConfigError(f"arch.sweep.values={list(values)!r} must all differ")
    return key, numbers


def make_run_plan(cfg: DictConfig, num_devices: int, replica_label: str | None = None) -> RunPlan:
    """Checks the config against the schema, then reconciles steps, envs, devices, rollout
    length and evaluation count.

    The run never drops updates silently: the plan states the exact number of env steps that
    will run, which `total_steps` reports and the runner prints when it differs from the ask.

    Args:
        cfg: the composed config.
        num_devices: how many parts the envs are split over (devices, or actor threads).
        replica_label: what those parts are, for messages; by default "actor thread(s)" with
            arch=sebulba (its actor threads take the role of Anakin's devices), else "device(s)".
    """
    validate_config(cfg)
    if replica_label is None:
        sebulba = OmegaConf.select(cfg, "arch.architecture_name", default=None) == "sebulba"
        replica_label = "actor thread(s)" if sebulba else "device(s)"
    num_seeds = _positive_int(cfg, "arch.num_seeds")
    update_batch = _positive_int(cfg, "arch.update_batch_size")
    total_envs = _positive_int(cfg, "arch.total_num_envs")
    rollout = _positive_int(cfg, "system.rollout_length")
    num_evaluation = _positive_int(cfg, "arch.num_evaluation")
    num_eval_episodes = _positive_int(cfg, "arch.num_eval_episodes")
    _positive_int(cfg, "arch.absolute_metric_episode_multiplier")
    assert None not in (num_seeds, update_batch, total_envs, rollout, num_evaluation)
    replicas = num_devices * update_batch
    if total_envs % replicas:
        raise ConfigError(
            f"arch.total_num_envs={total_envs} is not divisible by {num_devices} {replica_label} × "
            f"arch.update_batch_size={update_batch}"
        )
    steps_per_update = total_envs * rollout
    total_timesteps = _positive_int(cfg, "arch.total_timesteps", allow_none=True)
    num_updates = _positive_int(cfg, "arch.num_updates", allow_none=True)
    if total_timesteps is None and num_updates is None:
        raise ConfigError("set arch.total_timesteps (or arch.num_updates)")
    if total_timesteps is not None and num_updates is not None:
        raise ConfigError(
            "set only one of arch.total_timesteps and arch.num_updates (null the other)"
        )
    if num_updates is None:
        assert total_timesteps is not None
        num_updates = total_timesteps // steps_per_update
        requested = total_timesteps
        if num_updates < num_evaluation:
            raise ConfigError(
                f"arch.total_timesteps={total_timesteps:,} is too small: one update takes "
                f"{steps_per_update:,} steps and arch.num_evaluation={num_evaluation} needs at "
                f"least {num_evaluation * steps_per_update:,}"
            )
    else:
        requested = num_updates * steps_per_update
        if num_updates < num_evaluation:
            raise ConfigError(
                f"arch.num_updates={num_updates} is smaller than "
                f"arch.num_evaluation={num_evaluation}"
            )
    updates_per_eval = num_updates // num_evaluation
    # Rounding to whole periods keeps every period the same compiled program; the plan reports
    # the exact count instead of dropping the remainder unannounced.
    num_updates = updates_per_eval * num_evaluation
    sweep_key, sweep_values = _sweep(cfg)
    return RunPlan(
        num_devices=num_devices,
        num_seeds=num_seeds,
        num_runs=num_seeds * max(1, len(sweep_values)),
        sweep_key=sweep_key,
        sweep_values=sweep_values,
        update_batch_size=update_batch,
        total_num_envs=total_envs,
        envs_per_replica=total_envs // replicas,
        rollout_length=rollout,
        steps_per_update=steps_per_update,
        num_updates=num_updates,
        num_evaluation=num_evaluation,
        updates_per_evaluation=updates_per_eval,
        total_steps=num_updates * steps_per_update,
        requested_steps=requested,
        num_eval_episodes=num_eval_episodes,
        eval_episodes_per_device=-(-num_eval_episodes // num_devices),
        replica_label=replica_label,
    )


def check_divides(value_key: str, value: int, by_key: str, by: int) -> None:
    """Raises unless `value` splits evenly into `by` parts (e.g. a batch into minibatches)."""
    if by <= 0:
        raise ConfigError(f"{by_key}={by} must be a positive integer")
    if value % by:
        raise ConfigError(f"{value_key} ({value}) is not divisible by {by_key}={by}")


def check_range(cfg: DictConfig, dotted: str, low: float, high: float) -> float:
    value = OmegaConf.select(cfg, dotted, default=None)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{dotted}={value!r} must be a number in [{low}, {high}]") from err
    if not low <= number <= high:
        raise ConfigError(f"{dotted}={value!r} must be in [{low}, {high}]")
    return number


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return plain
