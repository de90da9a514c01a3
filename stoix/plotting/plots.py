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
import math
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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

from stoix.plotting.results import (  # noqa: E402
    STEP_COUNT,
    STEP_KEY,
    SUMMARY_FILENAME,
    PlotOptions,
    PlotReport,
    ResultsError,
    SummaryRow,
    find_metrics_files,
    load_results,
    prepare,
)

# marl-eval's names for the four aggregate statistics, with the rliable function for each.
_AGGREGATES: tuple[tuple[str, Callable[[np.ndarray], float]], ...] = (
    ("IQM", rly_metrics.aggregate_iqm),
    ("Mean", rly_metrics.aggregate_mean),
    ("Median", rly_metrics.aggregate_median),
    ("Optimality Gap", rly_metrics.aggregate_optimality_gap),
)


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
                row = [e[STEP_COUNT] for k, e in steps.items() if STEP_KEY.match(k)]
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
                [e[f"mean_{metric}"] for k, e in steps.items() if STEP_KEY.match(k)]
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
