"""Run logging: one facade fed once per evaluation period, fanning out to config-chosen sinks.

The training runner calls `StoixLogger.log_period` at the end of every evaluation period and
`StoixLogger.log_absolute` once after training. Each sink can be switched on or off:

* console: one TRAIN and one EVAL line per period with progress, ETA and steps per second,
  coloured by rich on a terminal and plain aligned text otherwise;
* JSON in the marl-eval format at ``run_dir / "metrics.json"``, rewritten atomically after
  every period;
* TensorBoard event files at ``run_dir / "tensorboard" / "seed_<seed>"``, one run per seed;
* Neptune, one run per seed, its local data under ``run_dir / "neptune"``;
* Weights & Biases, one run per seed, its local files under ``run_dir / "wandb"``.

Files go under ``run_dir`` only. The JSON and TensorBoard sinks write once they have something
to write, so a logger with only those off never touches the disk. Neptune and WandB runs are
created with the logger, so that a bad setting fails before training rather than after the
first period; their packages are imported only then.

Neptune and WandB plot every metric against environment steps. A resumed run opens new
Neptune and WandB runs (tagged ``resumed``) that continue the curves from the resumed step:
neither service can delete the killed run's points past the checkpoint, and offline runs
cannot be reopened at all.

Non-finite values (NaN, ±inf) are written to the JSON file as ``null``: strict JSON has no
NaN, and marl-eval expects every non-null entry to be a float. The console shows them as
``nan``/``inf``. TensorBoard skips them, leaving a gap in the curve: the usual cause is a
period in which no training episode finished, and a diverged loss already stops the runner.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
from rich.console import Console
from rich.text import Text
from tensorboardX import SummaryWriter

from stoix.utils.config import ConfigError

METRICS_FILENAME = "metrics.json"
TENSORBOARD_DIRNAME = "tensorboard"
NEPTUNE_DIRNAME = "neptune"
WANDB_DIRNAME = "wandb"  # wandb itself adds this folder under the ``dir`` it is given

_RETURN = "episode_return"
_LENGTH = "episode_length"
_STEP_COUNT = "step_count"
_ABSOLUTE_KEY = "absolute_metrics"
_STEP_PREFIX = "step_"

# Read through a module global so tests can drive the ETA with a fake clock.
_now = time.monotonic


@dataclass(frozen=True)
class RunIdentity:
    """Names a run in the marl-eval hierarchy: env suite -> task -> system -> one run per seed.

    Attributes:
        system_name: The algorithm, e.g. ``"ff_ppo"``.
        env_name: The environment suite, e.g. ``"gymnax"``.
        task_name: The task within the suite, e.g. ``"cartpole"``.
        seeds: One marl-eval run per seed, named ``f"seed_{seed}"``.
        run_labels: Optional, one per seed: a run is then named ``f"{label}_seed_{seed}"``, and
            a seed may repeat under different labels (a hyperparameter sweep).
    """

    system_name: str
    env_name: str
    task_name: str
    seeds: tuple[int, ...]
    run_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Config hands over lists (and sometimes numpy ints); a tuple of ints keeps the identity
        # hashable and the run names stable.
        object.__setattr__(self, "seeds", tuple(int(seed) for seed in self.seeds))
        for name in ("system_name", "env_name", "task_name"):
            if not getattr(self, name):
                raise ValueError(f"RunIdentity.{name} must be a non-empty string.")
        object.__setattr__(self, "run_labels", tuple(str(label) for label in self.run_labels))
        if not self.seeds:
            raise ValueError("RunIdentity.seeds must name at least one seed.")
        if self.run_labels and len(self.run_labels) != len(self.seeds):
            raise ValueError("RunIdentity.run_labels must have one label per seed.")
        if len(set(self.run_names)) != len(self.seeds):
            raise ValueError(f"RunIdentity runs must be distinct, got {self.run_names}.")

    @property
    def run_names(self) -> tuple[str, ...]:
        """The marl-eval run name of each seed, in seed order."""
        if self.run_labels:
            pairs = zip(self.run_labels, self.seeds, strict=True)
            return tuple(f"{label}_seed_{seed}" for label, seed in pairs)
        return tuple(f"seed_{seed}" for seed in self.seeds)


class _Progress(NamedTuple):
    """Where the run stands after a period, for the console's progress marker."""

    done: int  # periods finished, counting the one just logged
    total: int  # periods in the whole run
    eta_seconds: float  # wall-clock estimate for the remaining periods


class _PeriodRecord(NamedTuple):
    """One period's metrics, validated and copied into plain floats and numpy arrays."""

    period: int
    step: int  # environment steps per seed reached at the end of the period
    train: tuple[dict[str, float], ...]  # [num_seeds] metric -> scalar
    evaluation: tuple[dict[str, np.ndarray], ...]  # [num_seeds] metric -> (num_episodes,)
    timing: dict[str, float]
    progress: _Progress


class _AbsoluteRecord(NamedTuple):
    """The final re-evaluation of the best parameters."""

    step: int  # step the absolute metric is plotted at (the last step logged)
    evaluation: tuple[dict[str, np.ndarray], ...]  # [num_seeds] metric -> (num_episodes,)


class _SeedStats(NamedTuple):
    """A metric summarised across seeds."""

    mean: float
    std: float


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


class _Sink(Protocol):
    """A destination for logged metrics."""

    def write_period(self, record: _PeriodRecord) -> None: ...

    def write_absolute(self, record: _AbsoluteRecord) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Small numeric helpers shared by the sinks.
# ---------------------------------------------------------------------------------------------


def _episode_mean(values: np.ndarray) -> float:
    # An evaluation that finished no episode is a gap in the curve, not a crash or a warning.
    return float(np.mean(values)) if values.size else math.nan


def _episode_std(values: np.ndarray) -> float:
    return float(np.std(values)) if values.size else math.nan


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
    leading = [name for name in (_RETURN, _LENGTH) if name in names]
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


# ---------------------------------------------------------------------------------------------
# Console sink.
# ---------------------------------------------------------------------------------------------

_LABEL_WIDTH = 8  # fits "ABSOLUTE"
_VALUE_WIDTH = 9
_STD_WIDTH = 8
_RATE_WIDTH = 7
_RATE_LABEL_WIDTH = 4  # fits "SPS" and "time"
_SEPARATOR = "  "


class _ConsoleSink:
    """Two aligned lines per period (TRAIN, EVAL) and one ABSOLUTE line at the end."""

    def __init__(self, identity: RunIdentity, num_periods: int, total_steps: int, colour: bool):
        self._multi_seed = len(identity.seeds) > 1
        self._count_width = len(str(num_periods))
        self._step_width = len(f"{total_steps:,}")
        self._prefix_width = len(self._progress_prefix(_Progress(num_periods, num_periods, 0.0)))
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

    def write_period(self, record: _PeriodRecord) -> None:
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

    def write_absolute(self, record: _AbsoluteRecord) -> None:
        # Blank progress and rate columns keep the metric columns under the period lines.
        line = self._line(" " * self._prefix_width, "ABSOLUTE", "bold magenta", record.step)
        line.append(_SEPARATOR + " " * (_RATE_LABEL_WIDTH + 1 + _RATE_WIDTH))
        self._append_metrics(line, self._evaluation_stats(record.evaluation), show_std=True)
        self._console.print(line)

    def close(self) -> None:
        self._console.file.flush()

    def _progress_prefix(self, progress: _Progress) -> str:
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
            if name in (_RETURN, _LENGTH):
                value = f"{_format_value(stat.mean):>{_VALUE_WIDTH}}"
            else:
                value = _format_value(stat.mean)
            if name == _RETURN and self._multi_seed:
                # TRAIN pads the spread's width so the columns after it line up with EVAL.
                spread = f" ± {_format_value(stat.std):<{_STD_WIDTH}}"
                value += spread if show_std else " " * len(spread)
            self._append_cell(line, label, value, "bold" if name == _RETURN else "")

    @staticmethod
    def _evaluation_stats(
        evaluation: Sequence[Mapping[str, np.ndarray]],
    ) -> dict[str, _SeedStats]:
        return {
            name: _across_seeds([_episode_mean(m[name]) for m in evaluation if name in m])
            for name in _metric_names(evaluation)
        }


# ---------------------------------------------------------------------------------------------
# marl-eval JSON sink.
# ---------------------------------------------------------------------------------------------


def _json_floats(values: np.ndarray) -> list[float | None]:
    return [value if math.isfinite(value) else None for value in values.tolist()]


def _first_non_object(document: Any, keys: Sequence[str]) -> int | None:
    """Depth along ``keys`` of the first node that exists but is not an object, if any."""
    node = document
    for depth in range(len(keys) + 1):
        if not isinstance(node, dict):
            return depth
        if depth == len(keys) or keys[depth] not in node:
            return None
        node = node[keys[depth]]
    return None


def _load_document(path: Path, identity: RunIdentity) -> dict[str, Any]:
    """Reads an existing marl-eval file to resume into, refusing anything malformed."""
    if not path.exists():
        # Killed before its first period was logged: nothing to keep.
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Cannot resume logging because {path} is not valid JSON ({error})."
        ) from error
    # Only the branches this run writes into must have the marl-eval shape; other entries are
    # carried over untouched.
    prefix = (identity.env_name, identity.task_name, identity.system_name)
    for run_name in identity.run_names:
        keys = (*prefix, run_name)
        depth = _first_non_object(document, keys)
        if depth is not None:
            where = "/".join(keys[:depth]) or "the top level"
            raise ValueError(
                f"Cannot resume logging because {path} is not in the marl-eval format "
                f"(expected an object at {where})."
            )
    return document


class _JsonSink:
    """Keeps the marl-eval document in memory and replaces the file atomically per period."""

    def __init__(self, run_dir: Path, identity: RunIdentity, resume: bool):
        self._path = run_dir / METRICS_FILENAME
        self._identity = identity
        self._document = _load_document(self._path, identity) if resume else {}
        # On resume, entries from the first re-logged period onwards belong to the killed run's
        # future and are dropped once, when the resumed run logs its first period.
        self._drop_stale = resume

    def write_period(self, record: _PeriodRecord) -> None:
        system = self._system_entry()
        for run_name, evaluation in zip(self._identity.run_names, record.evaluation, strict=True):
            run = system.setdefault(run_name, {})
            if self._drop_stale:
                self._drop_from(run, record.period)
            entry: dict[str, Any] = {_STEP_COUNT: record.step}
            entry.update({name: _json_floats(values) for name, values in evaluation.items()})
            run[f"{_STEP_PREFIX}{record.period}"] = entry
        self._drop_stale = False
        self._write()

    def write_absolute(self, record: _AbsoluteRecord) -> None:
        system = self._system_entry()
        for run_name, evaluation in zip(self._identity.run_names, record.evaluation, strict=True):
            run = system.setdefault(run_name, {})
            run.pop(_ABSOLUTE_KEY, None)  # re-inserted last, after every step entry
            run[_ABSOLUTE_KEY] = {name: _json_floats(v) for name, v in evaluation.items()}
        self._write()

    def close(self) -> None:
        pass  # every write already reached the disk

    def _system_entry(self) -> dict[str, Any]:
        identity = self._identity
        env = self._document.setdefault(identity.env_name, {})
        task = env.setdefault(identity.task_name, {})
        system: dict[str, Any] = task.setdefault(identity.system_name, {})
        return system

    @staticmethod
    def _drop_from(run: dict[str, Any], period: int) -> None:
        for key in list(run):
            index = key.removeprefix(_STEP_PREFIX)
            stale_step = key.startswith(_STEP_PREFIX) and index.isdigit() and int(index) >= period
            if stale_step or key == _ABSOLUTE_KEY:
                del run[key]

    def _write(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # A temporary file in the same directory makes os.replace an atomic rename, so a reader
        # (or a kill -9) only ever sees the previous or the new complete file.
        temporary = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("w", encoding="utf-8") as file:
                json.dump(self._document, file, allow_nan=False)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        finally:
            temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# TensorBoard sink.
# ---------------------------------------------------------------------------------------------


def _add_scalar(writer: SummaryWriter, tag: str, value: float, step: int) -> None:
    # tensorboardX warns on every non-finite value, so those are left out (see module docstring).
    if math.isfinite(value):
        writer.add_scalar(tag, value, step)


class _TensorboardSink:
    """One tensorboardX writer per seed, so TensorBoard shows each seed as its own run."""

    def __init__(self, run_dir: Path, identity: RunIdentity, resume: bool):
        self._logdirs = tuple(run_dir / TENSORBOARD_DIRNAME / name for name in identity.run_names)
        self._resume = resume
        self._writers: tuple[SummaryWriter, ...] = ()

    def write_period(self, record: _PeriodRecord) -> None:
        # A resumed run purges the killed run's events from its first re-logged step onwards.
        writers = self._open(purge_step=record.step if self._resume else None)
        for writer, train, evaluation in zip(writers, record.train, record.evaluation, strict=True):
            for name, value in train.items():
                _add_scalar(writer, f"train/{name}", value, record.step)
            self._add_evaluation(writer, "eval", evaluation, record.step)
            for name, value in record.timing.items():
                _add_scalar(writer, f"timing/{name}", value, record.step)
            writer.flush()

    def write_absolute(self, record: _AbsoluteRecord) -> None:
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
            _add_scalar(writer, f"{group}/{name}_mean", _episode_mean(values), step)
        if _RETURN in evaluation:
            _add_scalar(writer, f"{group}/{_RETURN}_std", _episode_std(evaluation[_RETURN]), step)


# ---------------------------------------------------------------------------------------------
# Experiment trackers: Neptune and Weights & Biases.
# ---------------------------------------------------------------------------------------------

_NEPTUNE_KEY = "logger.neptune"
_WANDB_KEY = "logger.wandb"
# read-only cannot log, so it is not offered.
_NEPTUNE_MODES = ("async", "sync", "offline", "debug")
_NEPTUNE_SERVER_MODES = ("async", "sync")
_WANDB_MODES = ("online", "offline", "disabled")
_RESUMED_TAG = "resumed"
# WandB's own step counts log calls; plotting against this metric keeps the env-step x-axis
# even when a resumed run starts mid-way or the absolute metric shares the last step.
_WANDB_STEP_METRIC = "env_step"


def _tags(key: str, tags: Any) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ConfigError(f"{key}.tags={tags!r} must be a list of strings")
    return tuple(str(tag) for tag in tags)


def _optional_text(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}={value!r} must be a non-empty string or null")
    return value


@dataclass(frozen=True)
class NeptuneSettings:
    """Where the Neptune runs go; mirrors the ``logger.neptune`` config block.

    Attributes:
        project: ``"workspace/project"``; null falls back to ``NEPTUNE_PROJECT``, and offline and
            debug runs need none.
        mode: ``async`` (stream in the background), ``sync``, ``offline`` (upload later with
            ``neptune sync``) or ``debug`` (keep nothing).
        tags: Added to every seed's run.
    """

    project: str | None = None
    mode: str = "async"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in _NEPTUNE_MODES:
            raise ConfigError(
                f"{_NEPTUNE_KEY}.mode={self.mode!r} must be one of {', '.join(_NEPTUNE_MODES)}"
            )
        _optional_text(f"{_NEPTUNE_KEY}.project", self.project)
        object.__setattr__(self, "tags", _tags(_NEPTUNE_KEY, self.tags))

    def check_credentials(self) -> None:
        """Fails on a missing project or token now, rather than inside Neptune's own errors."""
        if self.mode not in _NEPTUNE_SERVER_MODES:
            return
        if not (self.project or os.environ.get("NEPTUNE_PROJECT")):
            raise ConfigError(
                f"{_NEPTUNE_KEY}.project is required with {_NEPTUNE_KEY}.mode={self.mode} "
                "(or set NEPTUNE_PROJECT, or use mode=offline)"
            )
        if not os.environ.get("NEPTUNE_API_TOKEN"):
            raise ConfigError(
                f"{_NEPTUNE_KEY}.mode={self.mode} needs NEPTUNE_API_TOKEN in the environment "
                "(or use mode=offline)"
            )


@dataclass(frozen=True)
class WandbSettings:
    """Where the Weights & Biases runs go; mirrors the ``logger.wandb`` config block.

    Attributes:
        project: The WandB project.
        entity: The user or team; null uses the logged-in user's default.
        mode: ``online``, ``offline`` (upload later with ``wandb sync``) or ``disabled``.
        group: Groups the seeds' runs; null groups them by the run directory's name, i.e. one
            group per launch.
        tags: Added to every seed's run.
    """

    project: str = "stoix"
    entity: str | None = None
    mode: str = "online"
    group: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in _WANDB_MODES:
            raise ConfigError(
                f"{_WANDB_KEY}.mode={self.mode!r} must be one of {', '.join(_WANDB_MODES)}"
            )
        if _optional_text(f"{_WANDB_KEY}.project", self.project) is None:
            raise ConfigError(f"{_WANDB_KEY}.project must name a project")
        _optional_text(f"{_WANDB_KEY}.entity", self.entity)
        _optional_text(f"{_WANDB_KEY}.group", self.group)
        object.__setattr__(self, "tags", _tags(_WANDB_KEY, self.tags))


_Settings = TypeVar("_Settings", NeptuneSettings, WandbSettings)


def _settings_from_config(
    kind: type[_Settings], key: str, section: _Settings | Mapping[str, Any] | None
) -> _Settings | None:
    """Reads a tracker's config block, or passes settings through; None when it is off."""
    if section is None or isinstance(section, kind):
        return section
    values = dict(section)
    use = values.pop("use", False)
    known = [field.name for field in fields(kind)]
    for name in values:
        if name not in known:
            raise ConfigError(f"{key}.{name} is not a setting (known: use, {', '.join(known)})")
    if not isinstance(use, bool):
        raise ConfigError(f"{key}.use={use!r} must be True or False")
    return kind(**values) if use else None


def check_tracker_settings(logger_config: Mapping[str, Any]) -> None:
    """Raises `ConfigError` for a bad `logger.neptune` or `logger.wandb` block; the runners call
    it with their other config checks, before compiling or writing anything."""
    _settings_from_config(NeptuneSettings, _NEPTUNE_KEY, logger_config.get("neptune"))
    _settings_from_config(WandbSettings, _WANDB_KEY, logger_config.get("wandb"))


def _first_line(error: BaseException) -> str:
    # Tracker errors are multi-line banners; the first line with words in it says what failed.
    for line in str(error).splitlines():
        if any(character.isalnum() for character in line):
            return f"{type(error).__name__}: {line.strip()[:200]}"
    return type(error).__name__


def _run_title(identity: RunIdentity, run_name: str) -> str:
    return f"{identity.system_name}_{identity.env_name}_{identity.task_name}_{run_name}"


class _TrackedRun(NamedTuple):
    """What a tracker records about one seed's run beside the resolved config."""

    title: str  # the run's display name
    seed: int
    run_name: str  # its marl-eval / TensorBoard name
    run_dir: str
    resumed: bool

    def info(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "name": self.run_name,
            "dir": self.run_dir,
            "resumed": self.resumed,
        }


def _tracked_runs(run_dir: Path, identity: RunIdentity, resume: bool) -> tuple[_TrackedRun, ...]:
    return tuple(
        _TrackedRun(_run_title(identity, name), seed, name, str(run_dir), resume)
        for seed, name in zip(identity.seeds, identity.run_names, strict=True)
    )


def _finite(scalars: Mapping[str, float]) -> dict[str, float]:
    # Both services reject or warn on non-finite values; a gap matches TensorBoard.
    return {name: value for name, value in scalars.items() if math.isfinite(value)}


def _evaluation_scalars(group: str, evaluation: Mapping[str, np.ndarray]) -> dict[str, float]:
    scalars: dict[str, float] = {}
    for name, values in evaluation.items():
        empty = not values.size
        scalars[f"{group}/{name}_mean"] = math.nan if empty else float(np.mean(values))
        scalars[f"{group}/{name}_std"] = math.nan if empty else float(np.std(values))
        scalars[f"{group}/{name}_min"] = math.nan if empty else float(np.min(values))
        scalars[f"{group}/{name}_max"] = math.nan if empty else float(np.max(values))
    return _finite(scalars)


def _period_scalars(record: _PeriodRecord) -> tuple[dict[str, float], ...]:
    """Per seed: train metrics, per-period evaluation statistics and timing, flat and finite."""
    per_seed = []
    for train, evaluation in zip(record.train, record.evaluation, strict=True):
        scalars = {f"train/{name}": value for name, value in train.items()}
        scalars.update(_evaluation_scalars("eval", evaluation))
        scalars.update({f"timing/{name}": value for name, value in record.timing.items()})
        per_seed.append(_finite(scalars))
    return tuple(per_seed)


@contextlib.contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    # Neptune reads its data directory only from the environment, when a run is created.
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


class _NeptuneSink:
    """One Neptune run per seed; float series at env steps, the absolute metric as atoms."""

    def __init__(
        self,
        run_dir: Path,
        identity: RunIdentity,
        settings: NeptuneSettings,
        config: Mapping[str, Any] | None,
        resume: bool,
    ):
        try:
            import neptune
            from neptune.utils import stringify_unsupported
        except ImportError as error:
            raise ConfigError(
                f"{_NEPTUNE_KEY}.use=True needs the neptune package (pip install neptune)"
            ) from error
        tags = [*settings.tags, *([_RESUMED_TAG] if resume else [])]
        self._runs: list[Any] = []
        data_dir = run_dir / NEPTUNE_DIRNAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            with _environment_variable("NEPTUNE_DATA_DIRECTORY", str(data_dir)):
                for tracked in _tracked_runs(run_dir, identity, resume):
                    run = neptune.init_run(
                        project=settings.project,
                        mode=settings.mode,
                        name=tracked.title,
                        tags=tags,
                        # One process prints every seed's lines, so no run's console is its own.
                        capture_stdout=False,
                        capture_stderr=False,
                    )
                    self._runs.append(run)
                    if config:
                        # Neptune has no null or list fields; these become their string form.
                        run["parameters"] = stringify_unsupported(dict(config))
                    run["run"] = tracked.info()
        except Exception as error:
            self.close()
            raise ConfigError(
                f"{_NEPTUNE_KEY} (mode={settings.mode}): cannot create a run: {_first_line(error)}"
            ) from error

    def write_period(self, record: _PeriodRecord) -> None:
        for run, scalars in zip(self._runs, _period_scalars(record), strict=True):
            for path, value in scalars.items():
                run[path].append(value, step=record.step)

    def write_absolute(self, record: _AbsoluteRecord) -> None:
        for run, evaluation in zip(self._runs, record.evaluation, strict=True):
            for path, value in _evaluation_scalars("absolute", evaluation).items():
                run[path] = value
            run["absolute/step"] = record.step

    def close(self) -> None:
        runs, self._runs = self._runs, []
        for run in runs:
            run.stop()


class _WandbSink:
    """One WandB run per seed, every metric plotted against ``env_step``."""

    def __init__(
        self,
        run_dir: Path,
        identity: RunIdentity,
        settings: WandbSettings,
        config: Mapping[str, Any] | None,
        resume: bool,
    ):
        try:
            import wandb
        except ImportError as error:
            raise ConfigError(
                f"{_WANDB_KEY}.use=True needs the wandb package (pip install wandb)"
            ) from error
        group = settings.group or run_dir.name
        tags = [*settings.tags, *([_RESUMED_TAG] if resume else [])]
        self._runs: list[Any] = []
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            for tracked in _tracked_runs(run_dir, identity, resume):
                run = wandb.init(
                    project=settings.project,
                    entity=settings.entity,
                    mode=settings.mode,
                    group=group,
                    tags=tags,
                    name=tracked.title,
                    dir=str(run_dir),
                    config={**(config or {}), "run": tracked.info()},
                    # Every seed's run stays open side by side, beside any run the caller has.
                    reinit="create_new",
                    # One process prints every seed's lines, so no run's console is its own.
                    settings=wandb.Settings(console="off"),
                )
                self._runs.append(run)
                run.define_metric(_WANDB_STEP_METRIC)
                run.define_metric("*", step_metric=_WANDB_STEP_METRIC)
        except Exception as error:
            self.close()
            raise ConfigError(
                f"{_WANDB_KEY} (mode={settings.mode}): cannot create a run: {_first_line(error)}"
            ) from error

    def write_period(self, record: _PeriodRecord) -> None:
        for run, scalars in zip(self._runs, _period_scalars(record), strict=True):
            run.log({_WANDB_STEP_METRIC: record.step, **scalars})

    def write_absolute(self, record: _AbsoluteRecord) -> None:
        for run, evaluation in zip(self._runs, record.evaluation, strict=True):
            scalars = _evaluation_scalars("absolute", evaluation)
            run.log({_WANDB_STEP_METRIC: record.step, **scalars})

    def close(self) -> None:
        runs, self._runs = self._runs, []
        for run in runs:
            run.finish()


# ---------------------------------------------------------------------------------------------
# Facade.
# ---------------------------------------------------------------------------------------------


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
        neptune_settings = _settings_from_config(NeptuneSettings, _NEPTUNE_KEY, neptune)
        wandb_settings = _settings_from_config(WandbSettings, _WANDB_KEY, wandb)
        if neptune_settings is not None:
            neptune_settings.check_credentials()
        self._identity = identity
        self._num_periods = num_periods
        self._total_steps = total_steps
        sinks: list[_Sink] = []
        # The JSON sink comes first so a corrupt resume file fails before anything is printed;
        # it reads but does not write. The trackers come next: they write their runs' files as
        # soon as they exist, so they are created only once every check that can fail has passed,
        # and before the console header or any metrics file.
        run_dir = Path(run_dir)
        if use_json:
            sinks.append(_JsonSink(run_dir, identity, resume))
        try:
            if neptune_settings is not None:
                sinks.append(_NeptuneSink(run_dir, identity, neptune_settings, config, resume))
            if wandb_settings is not None:
                sinks.append(_WandbSink(run_dir, identity, wandb_settings, config, resume))
        except ConfigError:
            for sink in sinks:
                sink.close()  # a Neptune run must not outlive a failed WandB one
            raise
        if use_tb:
            sinks.append(_TensorboardSink(run_dir, identity, resume))
        if use_console:
            sinks.append(_ConsoleSink(identity, num_periods, total_steps, colour))
        self._sinks: tuple[_Sink, ...] = tuple(sinks)
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
        record = _PeriodRecord(
            period=period,
            step=int(step),
            train=train_record,
            evaluation=evaluation_record,
            timing={str(name): float(value) for name, value in timing.items()},
            progress=_Progress(period + 1, self._num_periods, average_period * remaining),
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
        record = _AbsoluteRecord(step=step, evaluation=self._normalise_evaluation(evaluation))
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
            if _STEP_COUNT in metrics:
                raise ValueError(f"'{_STEP_COUNT}' is reserved and cannot be an eval metric.")
            # Copies, so a caller reusing its buffers cannot change what was logged.
            records.append(
                {
                    str(name): np.array(values, dtype=np.float64).reshape(-1)
                    for name, values in metrics.items()
                }
            )
        return tuple(records)
