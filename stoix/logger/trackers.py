"""The experiment trackers, Neptune and Weights & Biases: their settings, read from the
``logger.neptune`` and ``logger.wandb`` config blocks, and their sinks, one tracker run per seed.

Each tracker's package is imported only when its sink is created.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from stoix.errors import ConfigError
from stoix.logger.records import AbsoluteRecord, PeriodRecord, RunIdentity

NEPTUNE_DIRNAME = "neptune"
WANDB_DIRNAME = "wandb"  # wandb itself adds this folder under the ``dir`` it is given

NEPTUNE_KEY = "logger.neptune"
WANDB_KEY = "logger.wandb"
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
                f"{NEPTUNE_KEY}.mode={self.mode!r} must be one of {', '.join(_NEPTUNE_MODES)}"
            )
        _optional_text(f"{NEPTUNE_KEY}.project", self.project)
        object.__setattr__(self, "tags", _tags(NEPTUNE_KEY, self.tags))

    def check_credentials(self) -> None:
        """Fails on a missing project or token now, rather than inside Neptune's own errors."""
        if self.mode not in _NEPTUNE_SERVER_MODES:
            return
        if not (self.project or os.environ.get("NEPTUNE_PROJECT")):
            raise ConfigError(
                f"{NEPTUNE_KEY}.project is required with {NEPTUNE_KEY}.mode={self.mode} "
                "(or set NEPTUNE_PROJECT, or use mode=offline)"
            )
        if not os.environ.get("NEPTUNE_API_TOKEN"):
            raise ConfigError(
                f"{NEPTUNE_KEY}.mode={self.mode} needs NEPTUNE_API_TOKEN in the environment "
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
                f"{WANDB_KEY}.mode={self.mode!r} must be one of {', '.join(_WANDB_MODES)}"
            )
        if _optional_text(f"{WANDB_KEY}.project", self.project) is None:
            raise ConfigError(f"{WANDB_KEY}.project must name a project")
        _optional_text(f"{WANDB_KEY}.entity", self.entity)
        _optional_text(f"{WANDB_KEY}.group", self.group)
        object.__setattr__(self, "tags", _tags(WANDB_KEY, self.tags))


_Settings = TypeVar("_Settings", NeptuneSettings, WandbSettings)


def settings_from_config(
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
    settings_from_config(NeptuneSettings, NEPTUNE_KEY, logger_config.get("neptune"))
    settings_from_config(WandbSettings, WANDB_KEY, logger_config.get("wandb"))


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


def _period_scalars(record: PeriodRecord) -> tuple[dict[str, float], ...]:
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


class NeptuneSink:
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
                f"{NEPTUNE_KEY}.use=True needs the neptune package (pip install neptune)"
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
                f"{NEPTUNE_KEY} (mode={settings.mode}): cannot create a run: {_first_line(error)}"
            ) from error

    def write_period(self, record: PeriodRecord) -> None:
        for run, scalars in zip(self._runs, _period_scalars(record), strict=True):
            for path, value in scalars.items():
                run[path].append(value, step=record.step)

    def write_absolute(self, record: AbsoluteRecord) -> None:
        for run, evaluation in zip(self._runs, record.evaluation, strict=True):
            for path, value in _evaluation_scalars("absolute", evaluation).items():
                run[path] = value
            run["absolute/step"] = record.step

    def close(self) -> None:
        runs, self._runs = self._runs, []
        for run in runs:
            run.stop()


class WandbSink:
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
                f"{WANDB_KEY}.use=True needs the wandb package (pip install wandb)"
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
                f"{WANDB_KEY} (mode={settings.mode}): cannot create a run: {_first_line(error)}"
            ) from error

    def write_period(self, record: PeriodRecord) -> None:
        for run, scalars in zip(self._runs, _period_scalars(record), strict=True):
            run.log({_WANDB_STEP_METRIC: record.step, **scalars})

    def write_absolute(self, record: AbsoluteRecord) -> None:
        for run, evaluation in zip(self._runs, record.evaluation, strict=True):
            scalars = _evaluation_scalars("absolute", evaluation)
            run.log({_WANDB_STEP_METRIC: record.step, **scalars})

    def close(self) -> None:
        runs, self._runs = self._runs, []
        for run in runs:
            run.finish()
