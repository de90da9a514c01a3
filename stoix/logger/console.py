"""The console sink: a header, then one TRAIN and one EVAL line per period and one ABSOLUTE
line at the end, coloured by rich on a terminal and plain aligned text otherwise."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from rich.console import Console
from rich.text import Text

from stoix.logger.records import (
    EPISODE_LENGTH,
    EPISODE_RETURN,
    AbsoluteRecord,
    PeriodRecord,
    Progress,
    RunIdentity,
    episode_mean,
)


class _SeedStats(NamedTuple):
    """A metric summarised across seeds."""

    mean: float
    std: float


def _across_seeds(values: Sequence[float]) -> _SeedStats:
    """Mean and population standard deviation over the seeds that have a value (a run frozen
    after diverging, or one that finished no episode, has NaN)."""
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if not array.size:
        return _SeedStats(math.nan, math.nan)
    return _SeedStats(float(np.mean(array)), float(np.std(array)))


def _metric_names(per_seed: Iterable[Mapping[str, Any]]) -> list[str]:
    """Union of metric names over seeds: return and length first, then first-seen order."""
    names: dict[str, None] = {}
    for metrics in per_seed:
        names.update(dict.fromkeys(metrics))
    leading = [name for name in (EPISODE_RETURN, EPISODE_LENGTH) if name in names]
    return leading + [name for name in names if name not in leading]


def _format_count(value: float) -> str:
    """Formats a rate or count compactly, e.g. 152345 -> "152.3k"."""
    if not math.isfinite(value):
        return str(value)
    for divisor, suffix in ((1.0, ""), (1e3, "k"), (1e6, "M")):
        # Move up a unit only once this one would print 1000.0, so 999_960 reads "1.0M".
        if abs(round(value / divisor, 1)) < 1000:
            return f"{value / divisor:.1f}{suffix}"
    return f"{value / 1e9:.1f}B"


def _format_value(value: float) -> str:
    """Formats a metric to about four significant figures without switching notation often."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if 1e3 <= magnitude < 1e6:
        return f"{value:.1f}"
    if 1e-3 <= magnitude < 1e3:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


_LABEL_WIDTH = 8  # fits "ABSOLUTE"
_VALUE_WIDTH = 9
_STD_WIDTH = 8
_RATE_WIDTH = 7
_RATE_LABEL_WIDTH = 4  # fits "SPS" and "time"
_SEPARATOR = "  "


class ConsoleSink:
    """Two aligned lines per period (TRAIN, EVAL) and one ABSOLUTE line at the end."""

    def __init__(self, identity: RunIdentity, num_periods: int, total_steps: int, colour: bool):
        self._multi_seed = len(identity.seeds) > 1
        self._count_width = len(str(num_periods))
        self._step_width = len(f"{total_steps:,}")
        self._prefix_width = len(self._progress_prefix(Progress(num_periods, num_periods, 0.0)))
        # markup and highlighting are off so metric names are printed verbatim, and soft_wrap
        # keeps each record on one line when output goes to a file rather than a terminal.
        self._console = Console(
            color_system="auto" if colour else None,
            markup=False,
            highlight=False,
            emoji=False,
            soft_wrap=True,
        )
        seeds = ",".join(str(seed) for seed in dict.fromkeys(identity.seeds))
        runs = f" | {len(identity.seeds)} runs" if identity.run_labels else ""
        header = (
            f"{identity.system_name} | {identity.env_name}/{identity.task_name} | "
            f"seeds {seeds}{runs} | {num_periods} periods | {total_steps:,} steps"
        )
        self._console.print(Text(header, style="bold"))

    def write_period(self, record: PeriodRecord) -> None:
        prefix = self._progress_prefix(record.progress)
        train = {
            name: _across_seeds([m[name] for m in record.train if name in m]).mean
            for name in _metric_names(record.train)
        }
        sps = record.timing.get("steps_per_second", math.nan)
        eval_seconds = record.timing.get("eval_seconds", math.nan)

        train_line = self._line(prefix, "TRAIN", "bold cyan", record.step)
        self._append_rate(train_line, "SPS", _format_count(sps))
        self._append_metrics(train_line, {k: _SeedStats(v, math.nan) for k, v in train.items()})

        eval_line = self._line(" " * len(prefix), "EVAL", "bold green", record.step)
        seconds = f"{eval_seconds:.1f}s" if math.isfinite(eval_seconds) else "-"
        self._append_rate(eval_line, "time", seconds)
        self._append_metrics(eval_line, self._evaluation_stats(record.evaluation), show_std=True)

        self._console.print(train_line)
        self._console.print(eval_line)

    def write_absolute(self, record: AbsoluteRecord) -> None:
        # Blank progress and rate columns keep the metric columns under the period lines.
        line = self._line(" " * self._prefix_width, "ABSOLUTE", "bold magenta", record.step)
        line.append(_SEPARATOR + " " * (_RATE_LABEL_WIDTH + 1 + _RATE_WIDTH))
        self._append_metrics(line, self._evaluation_stats(record.evaluation), show_std=True)
        self._console.print(line)

    def close(self) -> None:
        self._console.file.flush()

    def _progress_prefix(self, progress: Progress) -> str:
        percent = 100.0 * progress.done / progress.total
        return (
            f"[{progress.done:>{self._count_width}}/{progress.total}] {percent:3.0f}%"
            f"  ETA {_format_duration(progress.eta_seconds):>8}"
        )

    def _line(self, prefix: str, label: str, label_style: str, step: int) -> Text:
        line = Text(prefix, style="dim")
        line.append(" ")
        line.append(f"{label:<{_LABEL_WIDTH}}", style=label_style)
        self._append_cell(line, "step", f"{step:>{self._step_width},}")
        return line

    @staticmethod
    def _append_cell(line: Text, name: str, value: str, style: str = "") -> None:
        line.append(_SEPARATOR)
        line.append(f"{name} ", style="dim")
        line.append(value, style=style)

    def _append_rate(self, line: Text, name: str, value: str) -> None:
        # SPS (TRAIN) and eval time (EVAL) share one fixed-width column so later columns align.
        self._append_cell(line, f"{name:<{_RATE_LABEL_WIDTH}}", f"{value:>{_RATE_WIDTH}}", "yellow")

    def _append_metrics(
        self, line: Text, stats: Mapping[str, _SeedStats], show_std: bool = False
    ) -> None:
        for name, stat in stats.items():
            label = name.removeprefix("episode_")
            if name in (EPISODE_RETURN, EPISODE_LENGTH):
                value = f"{_format_value(stat.mean):>{_VALUE_WIDTH}}"
            else:
                value = _format_value(stat.mean)
            if name == EPISODE_RETURN and self._multi_seed:
                # TRAIN pads the spread's width so the columns after it line up with EVAL.
                spread = f" ± {_format_value(stat.std):<{_STD_WIDTH}}"
                value += spread if show_std else " " * len(spread)
            self._append_cell(line, label, value, "bold" if name == EPISODE_RETURN else "")

    @staticmethod
    def _evaluation_stats(
        evaluation: Sequence[Mapping[str, np.ndarray]],
    ) -> dict[str, _SeedStats]:
        return {
            name: _across_seeds([episode_mean(m[name]) for m in evaluation if name in m])
            for name in _metric_names(evaluation)
        }
