"""What the Anakin and Sebulba runners share around their loops: the run session.

A session is where a run writes and what it resumes from: the run directory (decided before
anything is written), the checkpointer and the payload it restores, the logger, and the end of
every evaluation period (log, then checkpoint, with write failures reported against the last
good checkpoint). Both runners also share the divergence check and the plan announcement.
"""

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence, Tuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stoix.base_types import LearnerState, Params
from stoix.errors import ConfigError, TrainingDiverged
from stoix.runners.settings import RunSettings
from stoix.utils.config import RunPlan
from stoix.utils.distributed import broadcast_text, is_primary
from stoix.utils.results_path import check_results_path, runs_root_of, writes_to
from stoix.utils.stopping import RunStopped, StopRequest

if TYPE_CHECKING:  # the logger imports the trackers' settings; runs import it when they start
    from stoix.logger import RunIdentity, StoixLogger


class CheckpointPayload(NamedTuple):
    learner_state: LearnerState  # [D, S, B, ...]
    best_actor_params: Params  # [D, S, ...] best-so-far params per seed, for the absolute metric
    best_returns: np.ndarray  # [S]
    # [S] env steps at which each run diverged and was frozen; HEALTHY while it trains.
    diverged_at_step: np.ndarray


HEALTHY = -1


# DIVERGENCE


def non_finite_metrics(summary: Mapping[str, float]) -> list[str]:
    # Episode statistics are NaN when no episode ended in a period; only losses must be finite.
    return [
        name
        for name, value in summary.items()
        if name not in ("episode_return", "episode_length") and not np.isfinite(value)
    ]


def check_finite(train: Sequence[dict[str, float]], runs: Sequence[str], step: int) -> None:
    for run, summary in zip(runs, train, strict=True):
        bad = non_finite_metrics(summary)
        if bad:
            raise TrainingDiverged(
                f"non-finite {', '.join(bad)} in {run} during the period ending at step "
                f"{step:,}; the last good checkpoint (if any) is kept"
            )


# WHERE A RUN WRITES AND WHAT IT RESUMES


def run_directory(
    cfg: DictConfig, settings: RunSettings, system_name: str, plain: dict
) -> Tuple[Path, bool]:
    """Where this run writes, and whether it resumes; decided before anything is written."""
    from stoix.checkpointing import config_fingerprint, find_resumable_run

    check_results_path(Path(str(cfg.logger.base_exp_path)))

    runs_root = runs_root_of(cfg, system_name)
    ckpt = settings.checkpointing
    if ckpt.resumes:
        if ckpt.load_path is not None:
            path = Path(ckpt.load_path)
            run_dir = path.parent if path.name == "checkpoints" else path
            if not (run_dir / "checkpoints").is_dir():
                raise ConfigError(f"logger.checkpointing.load_path={path} holds no checkpoints/")
            return run_dir, True
        found = find_resumable_run(runs_root, plain)
        if found is None:
            raise ConfigError(
                "logger.checkpointing.load_model=True but no checkpoint of this exact config "
                f"exists under {runs_root}"
            )
        return found, True
    # Every process of a multi-host run must agree on the directory its checkpoints go to.
    stamp = broadcast_text(datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
    return runs_root / f"{stamp}_{config_fingerprint(plain)[:8]}", False


def open_checkpoints(
    settings: RunSettings,
    plain: dict,
    run_dir: Path,
    resume: bool,
    payload: CheckpointPayload,
    num_evaluation: int,
) -> Tuple[Any, CheckpointPayload, int]:
    """The run's checkpointer (None when it neither saves nor resumes), the payload to start
    from (restored when resuming) and the first period to run.

    Resuming reads the newest complete and intact checkpoint; the primary process prints which
    one, and why each newer one was skipped (those are set aside under `checkpoints/_rejected/`).
    """
    from stoix.checkpointing import Checkpointer, CheckpointError, device_count

    ckpt = settings.checkpointing
    if not (resume or ckpt.save_model):
        return None, payload, 0
    checkpointer = Checkpointer(
        run_dir / "checkpoints",
        plain,
        keep_latest=ckpt.keep_latest,
        keep_best=ckpt.keep_best,
        # The learner state spans the run's devices (Anakin: sharded over all of them;
        # Sebulba: replicated over the learner's), and restores onto as many only.
        num_devices=device_count(payload.learner_state),
    )
    if not resume:
        return checkpointer, payload, 0
    try:
        restored = checkpointer.restore(payload)
    except CheckpointError as err:
        checkpointer.close()
        raise ConfigError(f"cannot resume from {run_dir}: {err}") from err
    period = restored.info.period
    if is_primary():
        for skipped in restored.skipped:
            print(
                f"Warning: skipped checkpoint {skipped.period}, which {skipped.reason}; "
                f"moved it to {skipped.moved_to}",
                file=sys.stderr,
            )
        print(
            f"Resuming {run_dir} after evaluation {period + 1}/{num_evaluation} "
            f"(from checkpoint {period})"
        )
    return checkpointer, restored.payload, period + 1


def open_run_logger(
    cfg: DictConfig,
    plain: dict,
    run_dir: Path,
    resume: bool,
    identity: "RunIdentity",
    plan: RunPlan,
) -> "StoixLogger":
    """Creates the run directory (with the resolved config, unless resuming) and its logger;
    the first thing a run writes, once every check has passed and everything has compiled.
    In a multi-host run only process 0 writes: the others get a logger with no sinks."""
    from stoix.logger import StoixLogger

    if not is_primary():
        return StoixLogger(
            run_dir,
            identity,
            num_periods=plan.num_evaluation,
            total_steps=plan.total_steps,
            use_console=False,
            use_json=False,
            use_tb=False,
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    return StoixLogger(
        run_dir,
        identity,
        num_periods=plan.num_evaluation,
        total_steps=plan.total_steps,
        use_console=bool(cfg.logger.use_console),
        use_json=bool(cfg.logger.use_json),
        use_tb=bool(cfg.logger.use_tb),
        colour=bool(cfg.logger.colour),
        resume=resume,
        config=plain,
        neptune=plain["logger"].get("neptune"),
        wandb=plain["logger"].get("wandb"),
    )


# THE RUN'S ANNOUNCEMENTS


def announce_plan(description: str, plan: RunPlan) -> None:
    """The plan in one line, and a warning when the steps that will run differ from those asked
    for; from the primary process only."""
    if not is_primary():
        return
    print(f"Run plan: {description}")
    if plan.total_steps != plan.requested_steps:
        print(
            f"Warning: {plan.requested_steps:,} steps requested; {plan.total_steps:,} will run "
            f"so that every evaluation period holds {plan.updates_per_evaluation} whole updates.",
            file=sys.stderr,
        )


def period_timing(
    env_steps: int, seconds: float, eval_seconds: float, compile_seconds: float
) -> dict[str, float]:
    """The timing scalars logged with every period."""
    return {
        "steps_per_second": env_steps / seconds,
        "period_seconds": seconds,
        "eval_seconds": eval_seconds,
        "compile_seconds": compile_seconds,
    }


# THE SESSION


class RunSession:
    """A run's writing side once it has compiled: the logger, the checkpointer, and the last
    checkpoint that is known good (named in the one line a failed write becomes)."""

    def __init__(
        self,
        run_dir: Path,
        checkpointer: Any,
        start_period: int,
        settings: RunSettings,
    ):
        self.run_dir = run_dir
        self.checkpointer = checkpointer
        self.settings = settings
        self.logger: StoixLogger | None = None
        # The checkpoint a run resumed from is the last good one until it saves again.
        self.last_checkpoint: Path | None = (
            None
            if checkpointer is None or start_period == 0
            else checkpointer.directory / str(start_period - 1)
        )

    def open_logger(
        self,
        cfg: DictConfig,
        plain: dict,
        resume: bool,
        identity: "RunIdentity",
        plan: RunPlan,
        compile_seconds: float,
    ) -> None:
        with writes_to(self.run_dir, None):
            self.logger = open_run_logger(cfg, plain, self.run_dir, resume, identity, plan)
        if is_primary():
            print(f"Writing to {self.run_dir} (compiled in {compile_seconds:.1f}s)")

    def stop_if_requested(self, requested: bool, stop_request: StopRequest, step: int) -> None:
        """Ends the run between periods when a signal arrived (during compilation, or in the
        period before); `requested` is agreed by every process, or the others would wait."""
        if requested:
            raise RunStopped(tuple(stop_request.received), step, self.last_checkpoint)

    def end_period(
        self,
        period: int,
        steps_done: int,
        train: Sequence[Mapping[str, float]],
        evaluation: Sequence[Mapping[str, np.ndarray]],
        timing: Mapping[str, float],
        payload: CheckpointPayload,
        metric: float,
    ) -> None:
        """Logs the period, then checkpoints it when `logger.checkpointing.save_model` is on."""
        assert self.logger is not None, "open_logger comes first"
        with writes_to(self.run_dir, self.last_checkpoint):
            self.logger.log_period(period, steps_done, train, evaluation, timing)
            if self.settings.checkpointing.save_model and self.checkpointer is not None:
                self.checkpointer.save(period, payload, metric=metric, steps_done=steps_done)
                self.last_checkpoint = self.checkpointer.directory / str(period)

    def log_absolute(self, absolute: Sequence[Mapping[str, np.ndarray]]) -> None:
        assert self.logger is not None, "open_logger comes first"
        with writes_to(self.run_dir, self.last_checkpoint):
            self.logger.log_absolute(absolute)

    def close(self) -> None:
        with writes_to(self.run_dir, self.last_checkpoint):
            if self.logger is not None:
                self.logger.close()
            if self.checkpointer is not None:
                self.checkpointer.close()

    def report_compilations(self, compilations: int) -> None:
        """At the end of a run that finished, when `arch.report_compiles` asks for it."""
        if self.settings.report_compiles and is_primary():
            print(f"XLA compilations: {compilations}")
