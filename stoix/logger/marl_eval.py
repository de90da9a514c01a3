"""The marl-eval JSON sink: one document at ``run_dir / "metrics.json"``, replaced atomically
after every period, and on resume read back and continued from the first re-logged period."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stoix.logger.records import STEP_COUNT, AbsoluteRecord, PeriodRecord, RunIdentity

METRICS_FILENAME = "metrics.json"
_ABSOLUTE_KEY = "absolute_metrics"
_STEP_PREFIX = "step_"


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


class JsonSink:
    """Keeps the marl-eval document in memory and replaces the file atomically per period."""

    def __init__(self, run_dir: Path, identity: RunIdentity, resume: bool):
        self._path = run_dir / METRICS_FILENAME
        self._identity = identity
        self._document = _load_document(self._path, identity) if resume else {}
        # On resume, entries from the first re-logged period onwards belong to the killed run's
        # future and are dropped once, when the resumed run logs its first period.
        self._drop_stale = resume

    def write_period(self, record: PeriodRecord) -> None:
        system = self._system_entry()
        for run_name, evaluation in zip(self._identity.run_names, record.evaluation, strict=True):
            run = system.setdefault(run_name, {})
            if self._drop_stale:
                self._drop_from(run, record.period)
            entry: dict[str, Any] = {STEP_COUNT: record.step}
            entry.update({name: _json_floats(values) for name, values in evaluation.items()})
            run[f"{_STEP_PREFIX}{record.period}"] = entry
        self._drop_stale = False
        self._write()

    def write_absolute(self, record: AbsoluteRecord) -> None:
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
