"""What a run does when something goes wrong during it: one diverging member of a vmapped
program, a signal from the machine (SIGTERM/SIGUSR1, what SLURM sends), a results path that
cannot be written or a disk that fills up. Nothing is lost that could be kept, and the user
reads one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from stoix.errors import TrainingDiverged
from stoix.utils.entry import compose_config
from stoix.utils.results_path import ResultsUnwritable, check_results_path
from tests.helpers import REPO, TEST_XLA_FLAGS, TINY, read_metrics, runs_of

PPO = "stoix/systems/ppo/anakin/ff_ppo.py"
SEBULBA_PPO = "stoix/systems/ppo/sebulba/ff_ppo.py"
# A q_lr of 1e30 turns PQN's losses non-finite within the first period.
SWEEP = ("arch.sweep.key=system.q_lr", "arch.total_timesteps=4096", "system.rollout_length=16")


def _pqn(tmp_path: Path, values: str, *extra: str):
    return compose_config(
        "ff_pqn",
        [*TINY, *SWEEP, f"arch.sweep.values={values}", f"logger.base_exp_path={tmp_path}", *extra],
    )


# DIVERGENCE


def test_a_diverging_member_is_frozen_and_the_others_run_to_the_end(tmp_path, capsys):
    from stoix.systems.q_learning.anakin import ff_pqn

    final = ff_pqn.run_experiment(_pqn(tmp_path, "[1e-4,1e30]", "arch.num_seeds=2"))
    assert np.isfinite(final)
    err = capsys.readouterr().err
    diverged = ["q_lr=1e+30_seed_42", "q_lr=1e+30_seed_43"]
    for run in diverged:
        assert f"Warning: {run} diverged (non-finite loss" in err, err
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == sorted(["q_lr=0.0001_seed_42", "q_lr=0.0001_seed_43", *diverged])
    for name, run in runs.items():
        # Every run is written to the end, the frozen ones included (their last good params).
        assert sorted(k for k in run if k.startswith("step_")) == ["step_0", "step_1"], name
        assert all(np.isfinite(run["absolute_metrics"]["episode_return"])), name
        marks = [run[k].get("diverged_at_step") for k in ("step_0", "step_1", "absolute_metrics")]
        if name in diverged:
            assert marks == [[2048.0]] * 3, (name, marks)
        else:
            assert marks == [None] * 3, (name, marks)


def test_a_run_stops_only_when_every_member_has_diverged(tmp_path):
    from stoix.systems.q_learning.anakin import ff_pqn

    with pytest.raises(TrainingDiverged, match="non-finite loss.*step 2,048"):
        ff_pqn.run_experiment(_pqn(tmp_path, "[1e29,1e30]"))


# SIGNALS


def _start(script: str, overrides: list[str]) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": TEST_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, script, *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _logged_periods(base: Path) -> int:
    try:
        (run,) = runs_of(json.loads(next(base.rglob("metrics.json")).read_text())).values()
    except (StopIteration, ValueError):  # not written yet, or being replaced right now
        return 0
    return sum(key.startswith("step_") for key in run)


def _signal_after_a_period(
    process: subprocess.Popen, base: Path, sig: int, logged_before: int = 0
) -> tuple:
    """Sends `sig` once the run has logged a period more than `logged_before`; returns
    (exit code, stdout, stderr)."""
    deadline = time.monotonic() + 300
    while _logged_periods(base) <= logged_before:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


LONG_PPO = [*TINY, "arch.total_timesteps=1e6", "arch.num_evaluation=200", "logger.use_tb=False"]


def test_sigterm_finishes_the_period_saves_and_resumes(tmp_path):
    run = [*LONG_PPO, f"logger.base_exp_path={tmp_path}", "logger.checkpointing.save_model=True"]
    code, out, err = _signal_after_a_period(_start(PPO, run), tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("stoix: stopped by SIGTERM after ") and "load_model=True" in line, err
    assert "Traceback" not in err, err
    saved = Path(line.split("its checkpoint is ")[1].split(";")[0])
    assert (saved / "integrity.json").is_file(), list(saved.iterdir())
    assert not list(tmp_path.rglob("*orbax-checkpoint-tmp*"))
    logged = runs_of(read_metrics(tmp_path))["seed_42"]
    steps = sorted(int(k[5:]) for k in logged if k.startswith("step_"))
    assert steps == list(range(int(saved.name) + 1))

    # The same command resumes after the saved period; SIGUSR1 (SLURM's early warning) stops
    # it the same way.
    resumed = _start(PPO, [*run, "logger.checkpointing.load_model=True"])
    code, out, err = _signal_after_a_period(resumed, tmp_path, signal.SIGUSR1, len(steps))
    assert f"after evaluation {int(saved.name) + 1}/200" in out, out
    assert code == 128 + signal.SIGUSR1, err
    assert err.strip().splitlines()[-1].startswith("stoix: stopped by SIGUSR1"), err


def test_sigterm_without_checkpointing_still_writes_the_metrics(tmp_path):
    run = [*LONG_PPO, f"logger.base_exp_path={tmp_path}"]
    code, _, err = _signal_after_a_period(_start(PPO, run), tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].endswith("save_model=False), so it cannot resume"), err
    assert runs_of(read_metrics(tmp_path))["seed_42"]["step_0"]["episode_return"]


def test_sigterm_stops_a_sebulba_run_and_its_threads(tmp_path):
    from tests.helpers import SEBULBA_TINY

    run = [
        *SEBULBA_TINY,
        "arch.total_timesteps=1e6",
        "arch.num_evaluation=100",
        f"logger.base_exp_path={tmp_path}",
        "logger.checkpointing.save_model=True",
        "logger.use_tb=False",
    ]
    code, _, err = _signal_after_a_period(_start(SEBULBA_PPO, run), tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith("stoix: stopped by SIGTERM"), err
    assert "threads still running" not in err


# RESULTS PATHS


@pytest.mark.parametrize("kind", ["under_a_file", "proc", "read_only"])
def test_a_results_path_that_cannot_be_written_is_refused_before_any_work(tmp_path, kind):
    if kind == "under_a_file":
        (tmp_path / "a_file").write_text("")
        base = tmp_path / "a_file" / "results"
        match = "is a file, not a folder"
    elif kind == "proc":
        base = Path("/proc/stoix_results")
        match = "is not writable"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes through permission bits; /proc covers an unwritable path")
        (tmp_path / "locked").mkdir(mode=0o500)
        base = tmp_path / "locked" / "results"
        match = "is not writable"
    with pytest.raises(ResultsUnwritable, match=match):
        check_results_path(base)
    assert not any(p.name.startswith(".stoix-write-check") for p in tmp_path.rglob("*"))


def test_an_unwritable_results_path_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = subprocess.run(
        [sys.executable, PPO, *TINY, f"logger.base_exp_path={tmp_path / 'a_file' / 'x'}"],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": TEST_XLA_FLAGS, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"stoix: error: logger.base_exp_path={tmp_path / 'a_file' / 'x'} cannot be a folder: "
        f"{tmp_path / 'a_file'} is a file, not a folder"
    ]


def _can_mount_tmpfs() -> str | None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs root and unshare to mount a small tmpfs in a private mount namespace"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


def test_a_disk_that_fills_up_during_a_run_is_one_line_naming_the_last_checkpoint(tmp_path):
    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    mount = tmp_path / "small_disk"
    mount.mkdir()
    # Inside its own mount namespace: a 40 MiB disk, filled to the brim once the run has saved
    # its first checkpoint, as another job sharing the disk would.
    script = textwrap.dedent(
        f"""
        set -e
        mount -t tmpfs -o size=40m tmpfs {mount}
        ( while [ -z "$(find {mount} -name integrity.json)" ]; do sleep 0.2; done
          cat /dev/zero > {mount}/filler 2>/dev/null || true ) &
        exec {sys.executable} {PPO} {" ".join(LONG_PPO)} logger.base_exp_path={mount}/results \\
            logger.checkpointing.save_model=True logger.checkpointing.keep_latest=1000 \\
            logger.use_console=False
        """
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": TEST_XLA_FLAGS, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    # Besides the plan's note on rounded steps, one line: no library's tracebacks.
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("Warning: 1,0")]
    assert len(lines) == 1, result.stderr[-3000:]
    (line,) = lines
    assert line.startswith("stoix: error: cannot write the run's files in "), line
    assert "No space left on device" in line and "the last good checkpoint is " in line, line
