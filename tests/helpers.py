"""Shared helpers for the system-level tests."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent

# Two CPU devices, so every multi-device path runs. LLVM optimisation level 1 rather than XLA's
# default 2: the default run is dominated by compiling small programs, which this halves, while
# the compiled loops of the learning tests run as fast as at level 2 (measured on 2 cores: a
# smoke run's compilation 24 s → 14 s; PQN's CartPole test 52 s → 46 s).
TEST_XLA_FLAGS = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=1"
# For the processes of a multi-host test: each holds one of the two devices.
ONE_DEVICE_XLA_FLAGS = TEST_XLA_FLAGS.replace("device_count=2", "device_count=1")

# A budget that compiles and runs in seconds: 2 evaluations, tiny batch, few eval episodes.
TINY = (
    "arch.total_num_envs=8",
    "arch.num_evaluation=2",
    "arch.num_eval_episodes=4",
    "arch.absolute_metric_episode_multiplier=2",
    "logger.use_console=False",
)

# TINY for Sebulba systems: one short rollout, two minibatches, one epoch per update.
SEBULBA_TINY = (
    *TINY,
    "system.rollout_length=8",
    "system.num_minibatches=2",
    "system.epochs=1",
    "arch.total_timesteps=256",
)


def run_script(
    script: str,
    overrides: Sequence[str],
    timeout: float = 600,
    importable_tests: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs a system file as a user would, on two forced CPU devices.

    importable_tests: put the repository root on the path, so configs can name test modules
        (e.g. a gymnasium env id `tests.some_module:Env-v0`).
    extra_env: environment variables for the script.
    """
    env = {**os.environ, **(extra_env or {})}
    if importable_tests:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["XLA_FLAGS"] = TEST_XLA_FLAGS
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, str(REPO / script), *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_metrics(base: Path) -> dict:
    files = sorted(base.rglob("metrics.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def runs_of(metrics: dict) -> dict:
    """{run name: {step_k: ...}} of the only env/task/system in a marl-eval file."""
    (env,) = metrics.values()
    (task,) = env.values()
    (system,) = task.values()
    return system
