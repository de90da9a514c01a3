"""Comparison plots and aggregate statistics for Stoix runs, through marl-eval and rliable.

Every Stoix run writes ``metrics.json`` in the marl-eval format (env suite -> task -> system ->
run -> ``step_k`` / ``absolute_metrics``). `make_plots` finds every such file under a results
directory, merges them, and hands the merged document to marl-eval's pipeline, which min/max
normalises the metric per task over all the data and computes, through rliable's stratified
bootstrap, IQM, mean, median and optimality gap with 95% confidence intervals.

marl-eval has quirks that this module works around, each at the place it matters:

* its pipeline catches every exception, prints it and returns the raw data, so the input is
  checked here first and a failed pipeline is detected by the missing ``extra`` entry;
* its global min/max search uses ``if``/``elif``, so a step that lowers the minimum never raises
  the maximum; the normalised values are recomputed with the true per-task min/max;
* it takes the run names and step names of the first algorithm for every algorithm, so runs are
  renamed ``run_0`` ... and cut to a common count of runs and evaluations (with a warning);
* ``create_matrices_for_rliable`` replaces the per-env ``evaluation_interval`` in the shared
  ``extra`` entry, so each env is given its own deep copy;
* its bootstrap replication counts are hard-coded (50,000 for aggregate scores), so rliable is
  reached through a shim that sets ``reps`` and a seeded random state;
* ``aggregate_scores`` overwrites the point estimates it returns with rounded strings, so the
  point estimates are recomputed with rliable's metrics (the same deterministic functions);
* its sample-efficiency and single-task curves put evaluation k at ``k * mean interval`` (the
  first evaluation at step 0) and its single-task CI divides by sqrt(10) whatever the number of
  runs, so those two figures are drawn here from the real ``step_count`` values.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import itertools
import json
import math
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

# marl-eval imports pyplot at import time; Agg must be chosen first so no display is needed.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# colorcet (under marl-eval) warns about a deprecated param API on import: noise for a CLI user.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from marl_eval.plotting_tools import plotting as marl_plotting
    from marl_eval.utils.data_processing_utils import (
        create_matrices_for_rliable,
        data_process_pipeline,
    )
from matplotlib.figure import Figure  # noqa: E402
from rliable import library as rly  # noqa: E402
from rliable import metrics as rly_metrics  # noqa: E402
from scipy import stats  # noqa: E402

METRICS_FILENAME = "metrics.json"
SUMMARY_FILENAME = "summary.csv"

_STEP_COUNT = "step_count"
_ABSOLUTE = "absolute_metrics"
_STEP_KEY = re.compile(r"^step_(\d+)$")
# A swept run is named "<label>_seed_<seed>" (see stoix.logger.RunIdentity).
_SWEPT_RUN = re.compile(r"^(?P<label>.+)_seed_-?\d+$")

# marl-eval's names for the four aggregate statistics, with the rliable function for each.
_AGGREGATES: tuple[tuple[str, Callable[[np.ndarray], float]], ...] = (
    ("IQM", rly_metrics.aggregate_iqm),
    ("Mean", rly_metrics.aggregate_mean),
    ("Median", rly_metrics.aggregate_median),
    ("Optimality Gap", rly_metrics.aggregate_optimality_gap),
)


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
        if name == _STEP_COUNT and not is_absolute:
            if not isinstance(values, (int, float)) or isinstance(values, bool):
                raise _fail(path, f"{where}/{name}", "step_count must be a number")
            continue
        ok = isinstance(values, list) and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values
        )
        if not ok:
            raise _fail(path, f"{where}/{name}", "expected a list of numbers")
    if not is_absolute and _STEP_COUNT not in entry:
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
                        if key != _ABSOLUTE and not _STEP_KEY.match(key):
                            raise _fail(path, f"{where}/{key}", "unexpected key")
                        _check_entry(path, f"{where}/{key}", entry, key == _ABSOLUTE)
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
                    if _ABSOLUTE not in steps:
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
            sum(1 for key in steps if _STEP_KEY.match(key))
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
            sum(1 for key in steps if _STEP_KEY.match(key)) != num_evals
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
                        _STEP_COUNT: entry[_STEP_COUNT],
                        metric: _finite(entry[metric]),
                    }
                # marl-eval takes the last key as the absolute metric when counting steps.
                entries[_ABSOLUTE] = {metric: _finite(steps[_ABSOLUTE][metric])}
                if any(not e[metric] for e in entries.values()):
                    raise ResultsError(f"{env}/{task}/{algorithm}/{run}: '{metric}' has no values")
                cell[f"run_{index}"] = entries
    if not prepared:
        raise ResultsError(f"no finished run with metric '{metric}' found")
    return prepared


def _renormalise(processed: dict[str, Any], metric: str) -> None:
    """Recomputes marl-eval's per-task min/max normalisation with the true min and max."""
    norm, mean_norm = f"norm_{metric}", f"mean_norm_{metric}"
    for env, tasks in processed.items():
        if env == "extra":
            continue
        for algorithms in tasks.values():
            entries = [
                entry
                for runs in algorithms.values()
                for steps in runs.values()
                for entry in steps.values()
            ]
            values = np.concatenate([np.asarray(e[metric], dtype=float) for e in entries])
            low, high = values.min(), values.max()
            for entry in entries:
                # Same formula as marl-eval, including its epsilon for a constant metric.
                normed = (np.asarray(entry[metric], dtype=float) - low) / (high - low + 1e-6)
                entry[norm] = normed.tolist()
                entry[mean_norm] = float(np.mean(normed))


def process(prepared: dict[str, Any], metric: str) -> dict[str, Any]:
    """Runs marl-eval's `data_process_pipeline` and fixes its normalisation."""
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        processed = data_process_pipeline(copy.deepcopy(prepared), [metric])
    if "extra" not in processed:
        # The pipeline swallows its own exceptions and prints them.
        message = " ".join(captured.getvalue().split()) or "unknown error"
        raise ResultsError(f"marl-eval could not process the results: {message}")
    _renormalise(processed, metric)
    return processed


# ---------------------------------------------------------------------------------------------
# Statistics and figures.
# ---------------------------------------------------------------------------------------------


class _SeededRliable:
    """Stands in for ``rliable.library`` inside marl-eval, with our reps and random state."""

    def __init__(self, reps: int, seed: int):
        self._reps = reps
        self._seed = seed

    def get_interval_estimates(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["reps"] = self._reps
        kwargs["random_state"] = np.random.RandomState(self._seed)
        return rly.get_interval_estimates(*args, **kwargs)

    def create_performance_profile(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["reps"] = self._reps
        return rly.create_performance_profile(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(rly, name)


@contextlib.contextmanager
def _marl_eval_bootstrap(options: PlotOptions) -> Iterator[None]:
    original = marl_plotting.rly
    marl_plotting.rly = _SeededRliable(options.reps, options.seed)  # type: ignore[assignment]
    try:
        # marl-eval prints its tables; the CLI prints its own summary.
        # rliable hands arch a RandomState, which arch now flags as deprecated on every call.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
            yield
    finally:
        marl_plotting.rly = original


def _save(figure: Figure, path: Path, options: PlotOptions, report: PlotReport) -> None:
    figure.savefig(path, dpi=options.dpi, bbox_inches="tight")
    plt.close(figure)
    report.figures.append(path)


def _figure_of(result: Any) -> Figure:
    # rliable's helpers return an Axes in some versions and a Figure in others.
    return result if isinstance(result, Figure) else result.get_figure()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name)


def _mean_step_counts(processed: Mapping[str, Any], env: str) -> dict[str, np.ndarray]:
    """The mean ``step_count`` of each evaluation, per algorithm, over tasks and runs."""
    counts: dict[str, list[list[float]]] = {}
    for algorithms in processed[env].values():
        for algorithm, runs in algorithms.items():
            for steps in runs.values():
                row = [e[_STEP_COUNT] for k, e in steps.items() if _STEP_KEY.match(k)]
                counts.setdefault(algorithm, []).append(row)
    return {a: np.mean(np.asarray(rows, dtype=float), axis=0) for a, rows in counts.items()}


def _plot_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    ylabel: str,
    title: str,
) -> Figure:
    """One line with a shaded interval per algorithm: (x, y, lower, upper)."""
    figure, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab10")
    for index, (algorithm, (x, y, lower, upper)) in enumerate(curves.items()):
        colour = colours(index % 10)
        ax.plot(x, y, color=colour, linewidth=2, label=algorithm)
        ax.fill_between(x, lower, upper, color=colour, alpha=0.2)
    ax.set_xlabel("Environment steps per run")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def _learning_curve(processed: Mapping[str, Any], env: str, task: str, metric: str) -> Figure:
    """Mean of the per-run evaluation means, with a Student-t 95% CI over runs."""
    step_counts = _mean_step_counts({env: {task: processed[env][task]}}, env)
    curves = {}
    for algorithm, runs in processed[env][task].items():
        means = np.asarray(
            [
                [e[f"mean_{metric}"] for k, e in steps.items() if _STEP_KEY.match(k)]
                for steps in runs.values()
            ],
            dtype=float,
        )
        mean = means.mean(axis=0)
        n = means.shape[0]
        half = (
            stats.t.ppf(0.975, n - 1) * means.std(axis=0, ddof=1) / math.sqrt(n)
            if n > 1
            else np.zeros_like(mean)
        )
        curves[algorithm] = (step_counts[algorithm], mean, mean - half, mean + half)
    label = metric.replace("_", " ").capitalize()
    return _plot_curves(curves, f"{label} (mean, 95% CI over runs)", f"{env} / {task}")


def _env_only(processed: Mapping[str, Any], env: str) -> dict[str, Any]:
    # create_matrices_for_rliable pops and rewrites the shared "extra" entry per env.
    return copy.deepcopy({env: processed[env], "extra": processed["extra"]})


def _plot_env(
    processed: Mapping[str, Any],
    env: str,
    out_dir: Path,
    options: PlotOptions,
    report: PlotReport,
) -> None:
    metric = options.metric
    key = f"mean_norm_{metric}"
    with contextlib.redirect_stdout(io.StringIO()):
        matrices, tensors = create_matrices_for_rliable(_env_only(processed, env), env, [metric])
    scores: dict[str, np.ndarray] = matrices[key]
    upper_to_name = {name.upper(): name for name in scores}
    prefix = _safe(env)
    num_runs, num_tasks = next(iter(scores.values())).shape

    with _marl_eval_bootstrap(options), tempfile.TemporaryDirectory() as scratch:
        figure, _, cis = marl_plotting.aggregate_scores(
            matrices,
            metric,
            [metric],
            tabular_results_file_path=str(Path(scratch) / "aggregate"),
        )
    _save(_figure_of(figure), out_dir / f"{prefix}_aggregate_scores.png", options, report)
    for upper, interval in cis.items():
        name = upper_to_name[upper]
        for statistic, function in _AGGREGATES:
            lower, upper_bound = (float(v) for v in interval[statistic])
            point = float(function(scores[name]))
            report.rows.append(
                SummaryRow(env, name, statistic, point, lower, upper_bound, num_runs, num_tasks)
            )

    with _marl_eval_bootstrap(options):
        figure = marl_plotting.performance_profiles(matrices, metric, [metric])
    _save(_figure_of(figure), out_dir / f"{prefix}_performance_profiles.png", options, report)

    if len(scores) >= 2:
        pairs = [list(pair) for pair in itertools.combinations(sorted(scores), 2)]
        with _marl_eval_bootstrap(options):
            figure = marl_plotting.probability_of_improvement(matrices, metric, [metric], pairs)
        path = out_dir / f"{prefix}_probability_of_improvement.png"
        _save(_figure_of(figure), path, options, report)
    else:
        report.warnings.append(
            f"env '{env}': one algorithm only, so no probability-of-improvement plot"
        )

    with _marl_eval_bootstrap(options):
        figure, iqm, iqm_cis = marl_plotting.sample_efficiency_curves(tensors, metric, [metric])
    plt.close(_figure_of(figure))  # redrawn below against the real step counts
    step_counts = _mean_step_counts(processed, env)
    curves = {
        upper_to_name[upper]: (
            step_counts[upper_to_name[upper]][: len(values)],
            values,
            iqm_cis[upper][0],
            iqm_cis[upper][1],
        )
        for upper, values in iqm.items()
    }
    label = f"IQM normalised {metric.replace('_', ' ')} (95% CI)"
    figure = _plot_curves(curves, label, f"{env}: sample efficiency over {num_tasks} task(s)")
    _save(figure, out_dir / f"{prefix}_sample_efficiency.png", options, report)

    for task in sorted(processed[env]):
        figure = _learning_curve(processed, env, task, metric)
        path = out_dir / f"{prefix}_{_safe(task)}_learning_curve.png"
        _save(figure, path, options, report)


def _write_summary(rows: Sequence[SummaryRow], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(SummaryRow._fields)
        for row in rows:
            writer.writerow(
                [
                    *row[:3],
                    *(f"{value:.6g}" for value in row[3:6]),
                    row.num_runs,
                    row.num_tasks,
                ]
            )


def make_plots(results_dir: Path, out_dir: Path, options: PlotOptions) -> PlotReport:
    """Plots every env suite found under ``results_dir`` into ``out_dir``.

    Writes, per env suite ``<env>``: ``<env>_aggregate_scores.png``,
    ``<env>_performance_profiles.png``, ``<env>_probability_of_improvement.png`` (with two or
    more algorithms), ``<env>_sample_efficiency.png`` and ``<env>_<task>_learning_curve.png`` per
    task; and ``summary.csv`` with the aggregate point estimates and 95% CIs.

    Raises:
        ResultsError: If there is nothing to plot or a file is not in the expected format.
    """
    if options.reps < 1:
        raise ResultsError("reps must be at least 1")
    # marl-eval lower-cases every name it is given.
    options = dataclasses.replace(options, metric=options.metric.lower())
    report = PlotReport()
    merged = load_results(find_metrics_files(results_dir))
    prepared = prepare(merged, options.metric, report)
    processed = process(prepared, options.metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    for env in sorted(prepared):
        _plot_env(processed, env, out_dir, options, report)
    report.summary = out_dir / SUMMARY_FILENAME
    _write_summary(report.rows, report.summary)
    return report
