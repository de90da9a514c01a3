"""Command line: ``python -m stoix.plotting RESULTS_DIR -o OUT_DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stoix.plotting.plots import make_plots
from stoix.plotting.results import PlotOptions, ResultsError

_DESCRIPTION = """\
Compare Stoix runs with marl-eval and rliable.

Finds every metrics.json under RESULTS_DIR (any mix of systems, tasks, seeds and separate
processes), merges them and writes to OUT_DIR, per env suite: aggregate scores (IQM, mean,
median, optimality gap), performance profiles, probability of improvement (with two or more
algorithms), sample-efficiency curves (IQM over evaluations) and one learning curve per task,
as PNG files; plus summary.csv with the aggregate point estimates and 95% CIs.

Normalisation: as in marl-eval, the metric is min/max normalised per task over all the data
found (every algorithm, run and evaluation, including the absolute metric), so the normalised
scores, and the statistics built on them, change when runs are added or removed. Intervals are
95% stratified-bootstrap CIs. Unfinished runs (no absolute_metrics) are skipped; algorithms are
cut to a common number of runs and evaluations, with a warning.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stoix.plotting",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", type=Path, help="directory searched for metrics.json")
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help="directory for the PNG files and summary"
    )
    parser.add_argument(
        "--metric",
        default=PlotOptions.metric,
        help="evaluation metric to compare (default: %(default)s)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=PlotOptions.reps,
        help="bootstrap replications per CI; papers use 50000 (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=PlotOptions.seed, help="bootstrap seed (default: %(default)s)"
    )
    parser.add_argument(
        "--dpi", type=int, default=PlotOptions.dpi, help="PNG resolution (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = PlotOptions(metric=args.metric, reps=args.reps, seed=args.seed, dpi=args.dpi)
    try:
        report = make_plots(args.results_dir, args.out, options)
    except ResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in report.figures:
        print(path)
    print(report.summary)
    for row in report.rows:
        if row.statistic == "IQM":
            print(
                f"{row.env} {row.algorithm}: IQM {row.point:.3f} "
                f"[{row.lower:.3f}, {row.upper:.3f}] over {row.num_runs} run(s) × "
                f"{row.num_tasks} task(s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
