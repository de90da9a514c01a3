"""The `arch` and `logger.checkpointing` keys the runners read, as typed, checked objects.

Each is read once, when a run starts, from a config that the schema has already checked; every
default is in the YAML (`configs/arch/*.yaml`, `configs/logger/*.yaml`), so nothing here
supplies one. The runners read these objects, never the config keys themselves.
"""

from dataclasses import dataclass

from omegaconf import DictConfig

from stoix.errors import ConfigError

TRANSFER_GUARDS = ("allow", "log", "disallow")


@dataclass(frozen=True)
class CheckpointSettings:
    save_model: bool
    load_model: bool
    load_path: str | None  # a run directory or its checkpoints/ folder; None: find by config
    keep_latest: int
    keep_best: int

    @property
    def resumes(self) -> bool:
        return self.load_model or self.load_path is not None

    @staticmethod
    def from_config(cfg: DictConfig) -> "CheckpointSettings":
        ckpt = cfg.logger.checkpointing
        return CheckpointSettings(
            save_model=bool(ckpt.save_model),
            load_model=bool(ckpt.load_model),
            load_path=None if not ckpt.load_path else str(ckpt.load_path),
            keep_latest=int(ckpt.keep_latest),
            keep_best=int(ckpt.keep_best),
        )


@dataclass(frozen=True)
class RunSettings:
    """What both runners read from `arch` beyond the run plan."""

    seed: int
    evaluation_greedy: bool
    eval_max_steps: int | None  # hard cap on an evaluation's steps; None: env limit + 1
    absolute_metric: bool
    absolute_metric_episode_multiplier: int
    report_compiles: bool
    checkpointing: CheckpointSettings

    def eval_step_cap(self, max_episode_steps: int) -> int:
        return self.eval_max_steps or max_episode_steps + 1

    @staticmethod
    def from_config(cfg: DictConfig) -> "RunSettings":
        arch = cfg.arch
        return RunSettings(
            seed=int(arch.seed),
            evaluation_greedy=bool(arch.evaluation_greedy),
            eval_max_steps=None if arch.eval_max_steps is None else int(arch.eval_max_steps),
            absolute_metric=bool(arch.absolute_metric),
            absolute_metric_episode_multiplier=int(arch.absolute_metric_episode_multiplier),
            report_compiles=bool(arch.report_compiles),
            checkpointing=CheckpointSettings.from_config(cfg),
        )


@dataclass(frozen=True)
class PipelineSettings:
    """Sebulba's actor-learner pipeline (`arch=sebulba`)."""

    pipeline_capacity: int  # rollouts an actor may queue ahead of the learner
    thread_timeout_s: float  # a queue wait longer than this is a hang
    transfer_guard: str  # jax.transfer_guard level of the actor and learner loops

    @staticmethod
    def from_config(cfg: DictConfig) -> "PipelineSettings":
        arch = cfg.arch
        capacity, timeout = arch.pipeline_capacity, arch.thread_timeout_s
        if capacity is None or int(capacity) < 1:
            raise ConfigError(f"arch.pipeline_capacity={capacity!r} must be at least 1")
        if timeout is None or float(timeout) <= 0:
            raise ConfigError(f"arch.thread_timeout_s={timeout!r} must be positive")
        guard = str(arch.transfer_guard)
        if guard not in TRANSFER_GUARDS:
            raise ConfigError(f"arch.transfer_guard={guard!r} must be allow, log or disallow")
        return PipelineSettings(int(capacity), float(timeout), guard)
