"""Reading results for plots: every run's ``metrics.json`` found, checked, merged, and turned
into the input marl-eval's pipeline expects (runs renamed and cut to a common count)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

METRICS_FILENAME = "metrics.json"
SUMMARY_FILENAME = "summary.csv"

STEP_COUNT = "step_count"
ABSOLUTE = "absolute_metrics"
STEP_KEY = re.compile(r"^step_(\d+)$")
# A swept run is named "<label>_seed_<seed>" (see stoix.logger.RunIdentity).
_SWEPT_RUN = re.compile(r"^(?P<label>.+)_seed_-?\d+$")


class ResultsError(Exception):
    """The results directory holds no usable runs, or a file is not in the expected format."""


@dataclasses.dataclass(frozen=True)
class PlotOptions:
    """What to plot and how much bootstrap work to do.

    Attributes:
        metric: Evaluation metric to compare, normalised per task with marl-eval's min/max.
        reps: Bootstrap replications for every confidence interval.
        seed: Seed of the bootstrap resampling, for reproducible intervals.
        dpi: Resolution of the saved PNG files.
    """

    metric: str = "episode_return"
    reps: int = 2000
    seed: int = 0
    dpi: int = 100


class SummaryRow(NamedTuple):
    """One aggregate statistic of one algorithm on one env suite, with its 95% CI."""

    env: str
    algorithm: str
    statistic: str
    point: float
    lower: float
    upper: float
    num_runs: int
    num_tasks: int


@dataclasses.dataclass
class PlotReport:
    """What `make_plots` wrote, and what it left out or changed, in words."""

    figures: list[Path] = dataclasses.field(default_factory=list)
    summary: Path | None = None
    rows: list[SummaryRow] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


class _RunSource(NamedTuple):
    """One run of one metrics file, before runs from different files are merged."""

    path: Path
    env: str
    task: str
    algorithm: str
    run: str
    data: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# Loading and merging.
# ---------------------------------------------------------------------------------------------


def find_metrics_files(results_dir: Path) -> list[Path]:
    """Every ``metrics.json`` under ``results_dir``, in a stable order."""
    if not results_dir.is_dir():
        raise ResultsError(f"{results_dir} is not a directory")
    files = sorted(results_dir.rglob(METRICS_FILENAME))
    if not files:
        raise ResultsError(f"no {METRICS_FILENAME} found under {results_dir}")
    return files


def _fail(path: Path, where: str, problem: str) -> ResultsError:
    location = f" at {where}" if where else ""
    return ResultsError(f"{path}{location}: {problem} (expected Stoix's marl-eval format)")


def _check_entry(path: Path, where: str, entry: Any, is_absolute: bool) -> None:
    if not isinstance(entry, dict):
        raise _fail(path, where, "expected an object of metrics")
    for name, values in entry.items():
        if name == STEP_COUNT and not is_absolute:
            if not isinstance(values, (int, float)) or isinstance(values, bool):
                raise _fail(path, f"{where}/{name}", "step_count must be a number")
            continue
        ok = isinstance(values, list) and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
        )
        if not ok:
            raise _fail(path, f"{where}/{name}", "expected a list of numbers")
    if not is_absolute and STEP_COUNT not in entry:
        raise _fail(path, where, "missing step_count")


def _read_runs(path: Path) -> list[_RunSource]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultsError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(document, dict) or not document:
        raise _fail(path, "", "top level must be a non-empty object of env suites")
    runs = []
    for env, tasks in document.items():
        if not isinstance(tasks, dict):
            raise _fail(path, env, "expected an object of tasks")
        for task, algorithms in tasks.items():
            if not isinstance(algorithms, dict):
                raise _fail(path, f"{env}/{task}", "expected an object of systems")
            for algorithm, named_runs in algorithms.items():
                if not isinstance(named_runs, dict):
                    raise _fail(path, f"{env}/{task}/{algorithm}", "expected an object of runs")
                for run, steps in named_runs.items():
                    where = f"{env}/{task}/{algorithm}/{run}"
                    if not isinstance(steps, dict):
                        raise _fail(path, where, "expected an object of step_k entries")
                    for key, entry in steps.items():
                        if key != ABSOLUTE and not STEP_KEY.match(key):
                            raise _fail(path, f"{where}/{key}", "unexpected key")
                        _check_entry(path, f"{where}/{key}", entry, key == ABSOLUTE)
                    runs.append(_RunSource(path, env, task, algorithm, run, steps))
    return runs


def load_results(files: Sequence[Path]) -> dict[str, Any]:
    """Merges metrics files into one marl-eval document.

    A run name that appears in more than one file for the same env, task and system (separate
    processes with the same seed) gets its run directory's name appended, so no run hides
    another.

    Raises:
        ResultsError: If a file is not JSON in the expected format.
    """
    sources = [run for path in files for run in _read_runs(path)]
    counts: dict[tuple[str, str, str, str], int] = {}
    for s in sources:
        key = (s.env, s.task, s.algorithm, s.run)
        counts[key] = counts.get(key, 0) + 1
    merged: dict[str, Any] = {}
    for s in sources:
        name = s.run
        if counts[(s.env, s.task, s.algorithm, s.run)] > 1:
            name = f"{s.run}@{s.path.parent.name}"
        runs = merged.setdefault(s.env, {}).setdefault(s.task, {}).setdefault(s.algorithm, {})
        unique = name
        for index in itertools.count(2):
            if unique not in runs:
                break
            unique = f"{name}#{index}"  # two run directories of the same name
        runs[unique] = s.data
    return merged


# ---------------------------------------------------------------------------------------------
# Preparing marl-eval's input.
# ---------------------------------------------------------------------------------------------


def _algorithm_of(system: str, run: str) -> str:
    # Runs of a hyperparameter sweep are different configurations, not more seeds of one.
    swept = _SWEPT_RUN.match(run)
    return f"{system}[{swept['label']}]" if swept else system


def _finite(values: list[Any]) -> list[float]:
    # The logger writes NaN/inf as null; marl-eval needs numbers only.
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def prepare(merged: Mapping[str, Any], metric: str, report: PlotReport) -> dict[str, Any]:
    """Reshapes the merged document into what marl-eval's pipeline handles.

    Keeps the chosen metric only, drops incomplete runs (no ``absolute_metrics``), renames runs
    ``run_0`` ... and cuts every algorithm of an env to the same number of runs and
    evaluations, as marl-eval reads the run and step names of the first algorithm only.

    Raises:
        ResultsError: If no complete run has the metric, or names clash with marl-eval's rules.
    """
    prepared: dict[str, Any] = {}
    for env, tasks in merged.items():
        by_cell: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = {}
        for task, systems in tasks.items():
            for system, runs in systems.items():
                for run, steps in runs.items():
                    where = f"{env}/{task}/{system}/{run}"
                    if ABSOLUTE not in steps:
                        report.warnings.append(f"skipped {where}: no absolute_metrics (unfinished)")
                        continue
                    if any(metric not in entry for entry in steps.values()):
                        report.warnings.append(f"skipped {where}: no '{metric}' in every entry")
                        continue
                    # marl-eval lower-cases every key; doing it here keeps our lookups in step.
                    algorithm = _algorithm_of(system, run).lower()
                    by_cell.setdefault((task.lower(), algorithm), []).append((run, steps))
        if not by_cell:
            continue
        algorithms = sorted({a for _, a in by_cell})
        env_tasks = sorted({t for t, _ in by_cell})
        missing = [(t, a) for t in env_tasks for a in algorithms if (t, a) not in by_cell]
        if missing:
            names = ", ".join(f"{a} on {t}" for t, a in missing)
            raise ResultsError(
                f"env '{env}': every algorithm needs runs on every task (missing: {names})"
            )
        num_runs = min(len(runs) for runs in by_cell.values())
        num_evals = min(
            sum(1 for key in steps if STEP_KEY.match(key))
            for runs in by_cell.values()
            for _, steps in runs
        )
        if num_evals == 0:
            raise ResultsError(f"env '{env}': runs have no step_k evaluations")
        if any(len(runs) != num_runs for runs in by_cell.values()):
            report.warnings.append(
                f"env '{env}': runs per algorithm and task differ; using the first {num_runs} "
                "of each (marl-eval needs equal counts)"
            )
        longer = any(
            sum(1 for key in steps if STEP_KEY.match(key)) != num_evals
            for runs in by_cell.values()
            for _, steps in runs
        )
        if longer:
            report.warnings.append(
                f"env '{env}': runs have different numbers of evaluations; curves use the first "
                f"{num_evals} of each"
            )
        for (task, algorithm), runs in sorted(by_cell.items()):
            if "," in algorithm:
                raise ResultsError(f"algorithm name '{algorithm}' contains a comma (marl-eval)")
            tasks_out = prepared.setdefault(env.lower(), {})
            cell = tasks_out.setdefault(task, {}).setdefault(algorithm, {})
            for index, (run, steps) in enumerate(sorted(runs, key=lambda r: r[0])[:num_runs]):
                entries: dict[str, Any] = {}
                for k in range(num_evals):
                    entry = steps[f"step_{k}"]
                    entries[f"step_{k}"] = {
                        STEP_COUNT: entry[STEP_COUNT],
                        metric: _finite(entry[metric]),
                    }
                # marl-eval takes the last key as the absolute metric when counting steps.
                entries[ABSOLUTE] = {metric: _finite(steps[ABSOLUTE][metric])}
                if any(not e[metric] for e in entries.values()):
                    raise ResultsError(f"{env}/{task}/{algorithm}/{run}: '{metric}' has no values")
                cell[f"run_{index}"] = entries
    if not prepared:
        raise ResultsError(f"no finished run with metric '{metric}' found")
    return prepared
