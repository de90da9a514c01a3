"""The logger facade: `StoixLogger` checks what the runner logs, turns it into one record per
period, and hands that record to every sink the config switched on (see `stoix.logger`)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stoix.errors import ConfigError
from stoix.logger.console import ConsoleSink
from stoix.logger.marl_eval import JsonSink
from stoix.logger.records import (
    STEP_COUNT,
    AbsoluteRecord,
    PeriodRecord,
    Progress,
    RunIdentity,
    Sink,
)
from stoix.logger.tensorboard import TensorboardSink
from stoix.logger.trackers import (
    NEPTUNE_KEY,
    WANDB_KEY,
    NeptuneSettings,
    NeptuneSink,
    WandbSettings,
    WandbSink,
    settings_from_config,
)

# Read through a module global so tests can drive the ETA with a fake clock.
_now = time.monotonic


@dataclass
class _PeriodClock:
    """Wall-clock bookkeeping for the ETA, measured in this process only.

    The first period is timed from the logger's creation, so it includes compilation; once a
    second period is logged, only the gaps between periods count, which is what the remaining
    periods will take.
    """

    created: float
    first_logged: float | None = None
    periods_logged: int = 0

    def tick(self, now: float) -> float:
        """Records a logged period and returns the average seconds per period so far."""
        self.periods_logged += 1
        if self.first_logged is None:
            self.first_logged = now
            return now - self.created
        return (now - self.first_logged) / (self.periods_logged - 1)


def _to_scalar(value: Any) -> float:
    array = np.asarray(value, dtype=np.float64)
    # Scalars are expected; an array (e.g. per-env values) is summarised by its mean.
    return float(np.mean(array)) if array.size else math.nan


class StoixLogger:
    """Logs a run once per evaluation period to the console, marl-eval JSON, TensorBoard,
    Neptune and WandB.

    Example::

        identity = RunIdentity("ff_ppo", "gymnax", "cartpole", seeds=(0, 1))
        with StoixLogger(run_dir, identity, num_periods=20, total_steps=10**6) as logger:
            for period in range(20):
                ...  # learn and evaluate
                logger.log_period(period, step, train, evaluation, timing)
            logger.log_absolute(final_evaluation)
    """

    def __init__(
        self,
        run_dir: Path,
        identity: RunIdentity,
        num_periods: int,
        total_steps: int,
        use_console: bool = True,
        use_json: bool = True,
        use_tb: bool = True,
        colour: bool = True,
        resume: bool = False,
        config: Mapping[str, Any] | None = None,
        neptune: NeptuneSettings | Mapping[str, Any] | None = None,
        wandb: WandbSettings | Mapping[str, Any] | None = None,
    ):
        """Creates the logger and its sinks.

        Nothing is written to disk until the first period, except by Neptune and WandB, whose
        runs are created here so that a bad setting fails before training starts.

        Args:
            run_dir: Directory for every file the logger writes; created when first needed.
            identity: The names and seeds the run is filed under.
            num_periods: Number of evaluation periods in the whole run (for progress and ETA).
            total_steps: Environment steps per seed in the whole run (for column widths, and
                the step of the absolute metric if no period was logged).
            use_console: Print a TRAIN and an EVAL line per period.
            use_json: Write the marl-eval JSON file ``run_dir / "metrics.json"``.
            use_tb: Write TensorBoard events under ``run_dir / "tensorboard"``.
            colour: Colour the console output (only ever applied on a terminal).
            resume: Continue an existing run: keep the JSON entries before the first period
                logged now, and hide TensorBoard events from that step onwards. Neptune and
                WandB get new runs, tagged ``resumed``.
            config: The resolved run config as plain nested mappings, recorded as each Neptune
                run's ``parameters`` and each WandB run's config.
            neptune: Neptune settings, or the ``logger.neptune`` config block (off unless its
                ``use`` is true); None leaves Neptune off.
            wandb: WandB settings, or the ``logger.wandb`` config block, as for ``neptune``.

        Raises:
            ValueError: If ``num_periods`` or ``total_steps`` is out of range, or if resuming
                and the existing JSON file is corrupt.
            ConfigError: If a Neptune or WandB setting is invalid or a run cannot be created;
                raised before the console prints anything or a metrics file is written.
        """
        if num_periods < 1:
            raise ValueError(f"num_periods must be at least 1, got {num_periods}.")
        if total_steps < 0:
            raise ValueError(f"total_steps must be non-negative, got {total_steps}.")
        neptune_settings = settings_from_config(NeptuneSettings, NEPTUNE_KEY, neptune)
        wandb_settings = settings_from_config(WandbSettings, WANDB_KEY, wandb)
        if neptune_settings is not None:
            neptune_settings.check_credentials()
        self._identity = identity
        self._num_periods = num_periods
        self._total_steps = total_steps
        sinks: list[Sink] = []
        # The JSON sink comes first so a corrupt resume file fails before anything is printed;
        # it reads but does not write. The trackers come next: they write their runs' files as
        # soon as they exist, so they are created only once every check that can fail has passed,
        # and before the console header or any metrics file.
        run_dir = Path(run_dir)
        if use_json:
            sinks.append(JsonSink(run_dir, identity, resume))
        try:
            if neptune_settings is not None:
                sinks.append(NeptuneSink(run_dir, identity, neptune_settings, config, resume))
            if wandb_settings is not None:
                sinks.append(WandbSink(run_dir, identity, wandb_settings, config, resume))
        except ConfigError:
            for sink in sinks:
                sink.close()  # a Neptune run must not outlive a failed WandB one
            raise
        if use_tb:
            sinks.append(TensorboardSink(run_dir, identity, resume))
        if use_console:
            sinks.append(ConsoleSink(identity, num_periods, total_steps, colour))
        self._sinks: tuple[Sink, ...] = tuple(sinks)
        self._clock = _PeriodClock(created=_now())
        self._last_step: int | None = None
        self._closed = False

    def log_period(
        self,
        period: int,
        step: int,
        train: Sequence[Mapping[str, float]],
        evaluation: Sequence[Mapping[str, np.ndarray]],
        timing: Mapping[str, float],
    ) -> None:
        """Logs one evaluation period to every enabled sink.

        Args:
            period: Index of the period, from 0 to ``num_periods - 1``.
            step: Environment steps per seed reached at the end of the period.
            train: One mapping per seed of scalar training metrics.
            evaluation: One mapping per seed from metric name to per-episode values of shape
                ``(num_eval_episodes,)``, including ``episode_return`` and ``episode_length``.
            timing: Timing scalars such as ``steps_per_second``, ``period_seconds`` and
                ``eval_seconds``.

        Raises:
            ValueError: If the period is out of range or the per-seed sequences do not have
                one entry per seed.
            RuntimeError: If the logger is closed.
        """
        self._check_open()
        if not 0 <= period < self._num_periods:
            raise ValueError(f"period must be in [0, {self._num_periods}), got {period}.")
        train_record = tuple(
            {str(name): _to_scalar(value) for name, value in metrics.items()}
            for metrics in self._per_seed("train", train)
        )
        evaluation_record = self._normalise_evaluation(evaluation)
        # Ticked only once the input is known good, so a rejected call does not skew the ETA.
        average_period = self._clock.tick(_now())
        remaining = self._num_periods - (period + 1)
        record = PeriodRecord(
            period=period,
            step=int(step),
            train=train_record,
            evaluation=evaluation_record,
            timing={str(name): float(value) for name, value in timing.items()},
            progress=Progress(period + 1, self._num_periods, average_period * remaining),
        )
        self._last_step = record.step
        for sink in self._sinks:
            sink.write_period(record)

    def log_absolute(self, evaluation: Sequence[Mapping[str, np.ndarray]]) -> None:
        """Logs the absolute metric: the best parameters re-evaluated on more episodes.

        Args:
            evaluation: One mapping per seed from metric name to per-episode values, as in
                `log_period`.

        Raises:
            ValueError: If ``evaluation`` does not have one entry per seed.
            RuntimeError: If the logger is closed.
        """
        self._check_open()
        step = self._total_steps if self._last_step is None else self._last_step
        record = AbsoluteRecord(step=step, evaluation=self._normalise_evaluation(evaluation))
        for sink in self._sinks:
            sink.write_absolute(record)

    def close(self) -> None:
        """Flushes and closes every sink; further calls to `close` do nothing."""
        if self._closed:
            return
        self._closed = True
        for sink in self._sinks:
            sink.close()

    def __enter__(self) -> StoixLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("StoixLogger is closed; create a new one to log again.")

    def _per_seed(self, what: str, values: Sequence[Any]) -> Sequence[Any]:
        seeds = self._identity.seeds
        if len(values) != len(seeds):
            raise ValueError(
                f"Expected {len(seeds)} {what} mappings (one per seed {seeds}), got {len(values)}."
            )
        return values

    def _normalise_evaluation(
        self, evaluation: Sequence[Mapping[str, np.ndarray]]
    ) -> tuple[dict[str, np.ndarray], ...]:
        records = []
        for metrics in self._per_seed("evaluation", evaluation):
            if STEP_COUNT in metrics:
                raise ValueError(f"'{STEP_COUNT}' is reserved and cannot be an eval metric.")
            # Copies, so a caller reusing its buffers cannot change what was logged.
            records.append(
                {
                    str(name): np.array(values, dtype=np.float64).reshape(-1)
                    for name, values in metrics.items()
                }
            )
        return tuple(records)
