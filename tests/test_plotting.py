"""`python -m stoix.plotting` on the logs of a real (tiny) PPO and DQN sweep, made by the
launcher's local executor: the sweep test of the launcher and the input of the plots."""

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from stoix.plotting import PlotOptions, make_plots
from stoix.plotting.__main__ import main
from stoix.plotting.results import load_results
from tests.helpers import REPO, TEST_XLA_FLAGS
from tests.test_launcher import TINY_SWEEP, assert_sweep_results

SYSTEMS = ("ff_ppo", "ff_dqn")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Few replications: the tests check the plumbing, not the width of the intervals.
REPS = "200"


def _plot(results: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stoix.plotting", str(results), "-o", str(out), "--reps", REPS]
        + list(extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE, path
    assert header[12:16] == b"IHDR", path
    return struct.unpack(">II", header[16:24])


def _check_figures(plotted: Path) -> None:
    names = [
        "gymnax_aggregate_scores.png",
        "gymnax_performance_profiles.png",
        "gymnax_probability_of_improvement.png",
        "gymnax_sample_efficiency.png",
        "gymnax_cartpole_learning_curve.png",
    ]
    for name in names:
        path = plotted / name
        assert path.is_file(), sorted(p.name for p in plotted.iterdir())
        assert path.stat().st_size > 5_000, name
        width, height = _png_size(path)
        assert width > 300 and height > 100, (name, width, height)


def _check_summary(plotted: Path) -> None:
    with (plotted / "summary.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    iqm = {row["algorithm"]: row for row in rows if row["statistic"] == "IQM"}
    assert set(iqm) == set(SYSTEMS)
    for row in iqm.values():
        lower, point, upper = (float(row[k]) for k in ("lower", "point", "upper"))
        assert 0.0 <= lower <= point <= upper <= 1.0, row
        assert (row["env"], row["num_runs"], row["num_tasks"]) == ("gymnax", "2", "1")
    statistics = {row["statistic"] for row in rows}
    assert statistics == {"IQM", "Mean", "Median", "Optimality Gap"}


def _check_one_algorithm_skips_probability_of_improvement(results: Path, tmp_path: Path) -> None:
    only_ppo = tmp_path / "one_algorithm"
    shutil.copytree(results / "ff_ppo", only_ppo / "ff_ppo")
    report = make_plots(only_ppo, tmp_path / "one_algorithm_plots", PlotOptions(reps=50))
    names = {path.name for path in report.figures}
    assert "gymnax_aggregate_scores.png" in names
    assert not (tmp_path / "one_algorithm_plots" / "gymnax_probability_of_improvement.png").exists()
    assert any("probability-of-improvement" in warning for warning in report.warnings)


def _check_runs_of_separate_processes_keep_distinct_names(results: Path, tmp_path: Path) -> None:
    # The sweep's two seeds are two processes with distinct run names: they merge as they are.
    run_dirs = sorted((results / "ff_ppo" / "gymnax_cartpole").iterdir())
    merged = load_results(sorted(results.joinpath("ff_ppo").rglob("metrics.json")))
    assert sorted(merged["gymnax"]["cartpole"]["ff_ppo"]) == ["seed_0", "seed_1"]
    # The same run logged twice (e.g. copied from two machines) keeps both, told apart.
    copies = tmp_path / "copies"
    for name in ("first", "second"):
        shutil.copytree(run_dirs[0], copies / name)
    (run_name,) = load_results([run_dirs[0] / "metrics.json"])["gymnax"]["cartpole"]["ff_ppo"]
    merged = load_results(sorted(copies.rglob("metrics.json")))
    assert sorted(merged["gymnax"]["cartpole"]["ff_ppo"]) == [
        f"{run_name}@first",
        f"{run_name}@second",
    ]


def test_a_local_launcher_sweep_writes_one_tree_that_plots(tmp_path):
    """A real 2 systems × 2 seeds sweep (PPO and DQN, tiny budgets) through the launcher's local
    executor, then the plots of its results tree. One test, so the sweep runs once even when
    the tests are spread over workers."""
    results = tmp_path / "runs"
    # The launcher runs as a user runs it, in its own process: submitit's local executor inside
    # a pytest-xdist worker broke the output capture of the tests after it.
    swept = subprocess.run(
        [sys.executable, "launcher.py", f"base_exp_path={results}", *TINY_SWEEP]
        # Two jobs at a time: compilation dominates and is mostly single-threaded.
        + ["executor=local", "local.max_parallel=2"],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": TEST_XLA_FLAGS, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    assert swept.stdout.count("[done]") == 4, swept.stdout
    assert_sweep_results(results)
    assert (results / "_submitit").is_dir()

    plotted = tmp_path / "plots"
    process = _plot(results, plotted)
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    _check_figures(plotted)
    _check_summary(plotted)
    _check_one_algorithm_skips_probability_of_improvement(results, tmp_path)
    _check_runs_of_separate_processes_keep_distinct_names(results, tmp_path)


def test_directory_without_metrics_exits_2_with_one_line(tmp_path):
    process = _plot(tmp_path, tmp_path / "out")
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0, process.stderr
    assert "no metrics.json" in process.stderr


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"gymnax": {"cartpole": {"ff_ppo": {"seed_0": {"step_0": {"x": "a"}}}}}}),
        json.dumps({"gymnax": {"cartpole": {"ff_ppo": {"seed_0": {"epoch": {}}}}}}),
    ],
)
def test_malformed_metrics_exit_2_with_one_line(tmp_path, capsys, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(content)
    assert main([str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert "metrics.json" in error
