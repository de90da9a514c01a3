"""The TensorBoard sink: event files at ``run_dir / "tensorboard" / "<run name>"``, one
TensorBoard run per seed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tensorboardX import SummaryWriter

from stoix.logger.records import (
    EPISODE_RETURN,
    AbsoluteRecord,
    PeriodRecord,
    RunIdentity,
    episode_mean,
)

TENSORBOARD_DIRNAME = "tensorboard"


def _episode_std(values: np.ndarray) -> float:
    return float(np.std(values)) if values.size else math.nan


def _add_scalar(writer: SummaryWriter, tag: str, value: float, step: int) -> None:
    # tensorboardX warns on every non-finite value, so those are left out (see `stoix.logger`).
    if math.isfinite(value):
        writer.add_scalar(tag, value, step)


class TensorboardSink:
    """One tensorboardX writer per seed, so TensorBoard shows each seed as its own run."""

    def __init__(self, run_dir: Path, identity: RunIdentity, resume: bool):
        self._logdirs = tuple(run_dir / TENSORBOARD_DIRNAME / name for name in identity.run_names)
        self._resume = resume
        self._writers: tuple[SummaryWriter, ...] = ()

    def write_period(self, record: PeriodRecord) -> None:
        # A resumed run purges the killed run's events from its first re-logged step onwards.
        writers = self._open(purge_step=record.step if self._resume else None)
        for writer, train, evaluation in zip(writers, record.train, record.evaluation, strict=True):
            for name, value in train.items():
                _add_scalar(writer, f"train/{name}", value, record.step)
            self._add_evaluation(writer, "eval", evaluation, record.step)
            for name, value in record.timing.items():
                _add_scalar(writer, f"timing/{name}", value, record.step)
            writer.flush()

    def write_absolute(self, record: AbsoluteRecord) -> None:
        # No purge here: the absolute metric shares its step with the last period's events.
        writers = self._open(purge_step=None)
        for writer, evaluation in zip(writers, record.evaluation, strict=True):
            self._add_evaluation(writer, "absolute", evaluation, record.step)
            writer.flush()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def _open(self, purge_step: int | None) -> tuple[SummaryWriter, ...]:
        if not self._writers:
            self._writers = tuple(
                SummaryWriter(logdir=str(logdir), purge_step=purge_step) for logdir in self._logdirs
            )
        return self._writers

    @staticmethod
    def _add_evaluation(
        writer: SummaryWriter, group: str, evaluation: Mapping[str, np.ndarray], step: int
    ) -> None:
        for name, values in evaluation.items():
            _add_scalar(writer, f"{group}/{name}_mean", episode_mean(values), step)
        if EPISODE_RETURN in evaluation:
            _add_scalar(
                writer,
                f"{group}/{EPISODE_RETURN}_std",
                _episode_std(evaluation[EPISODE_RETURN]),
                step,
            )
