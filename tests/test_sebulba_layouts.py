"""Sebulba on every device layout: one device (what most users have), and actors sharing a
device with the learner. The learner donates its state to each update, so an actor that kept a
reference to the learner's own parameter buffers (instead of a copy) fails at its next step
with "Buffer has been deleted or donated"; these layouts are where that happens."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from stoix.utils.entry import compose_config
from tests.helpers import ONE_DEVICE_XLA_FLAGS, REPO, SEBULBA_TINY, read_metrics, runs_of

SYSTEMS = {
    "ff_ppo": "stoix/systems/ppo/sebulba/ff_ppo.py",
    "ff_impala": "stoix/systems/impala/sebulba/ff_impala.py",
    "ff_pqn": "stoix/systems/q_learning/sebulba/ff_pqn.py",
}
# Three updates per period, so the actors act on parameters published after donating updates.
BUDGET = (*SEBULBA_TINY, "arch.total_timesteps=384")


def _run_on_one_device(script: str, overrides: list[str], timeout: float = 600):
    env = {**os.environ, "XLA_FLAGS": ONE_DEVICE_XLA_FLAGS, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, script, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _system(name: str):
    import importlib

    module = SYSTEMS[name].removesuffix(".py").replace("/", ".")
    return importlib.import_module(module).SYSTEM


# The tests run on two forced CPU devices; each case puts actors and learner on shared devices.
SHARED_LAYOUTS = [
    ("ff_ppo", ["arch.actor.device_ids=[0]", "arch.learner.device_ids=[0]"]),
    ("ff_impala", ["arch.actor.device_ids=[0,1]", "arch.learner.device_ids=[1]"]),
    ("ff_pqn", ["arch.actor.device_ids=[0,1]", "arch.learner.device_ids=[0,1]"]),
]


@pytest.mark.parametrize(
    "name, layout", SHARED_LAYOUTS, ids=[f"{n}-{'-'.join(o)}" for n, o in SHARED_LAYOUTS]
)
def test_actors_and_learner_sharing_a_device(name, layout, tmp_path):
    from stoix.runners.sebulba import run_sebulba_measured

    cfg = compose_config(
        name,
        [*BUDGET, *layout, f"logger.base_exp_path={tmp_path}", "logger.use_tb=False"],
        arch_dir="default/sebulba",
    )
    result = run_sebulba_measured(cfg, _system(name))
    assert np.isfinite(result.final_return) and np.isfinite(result.absolute_return)
    (run,) = runs_of(read_metrics(tmp_path)).values()
    assert sorted(k for k in run if k.startswith("step_")) == ["step_0", "step_1"]


def test_every_sebulba_system_runs_on_one_device(tmp_path):
    # One process per system, as a user on a one-GPU (or plain CPU) machine would run it, with
    # the default layout: actors and learner both on device 0.
    for name, script in SYSTEMS.items():
        out = tmp_path / name
        result = _run_on_one_device(
            script, [*BUDGET, f"logger.base_exp_path={out}", "logger.use_tb=False"]
        )
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
        assert "actor thread(s) on device(s) 0, learner on device(s) 0" in result.stdout, name
        (run,) = runs_of(read_metrics(out)).values()
        assert "absolute_metrics" in run, name


@pytest.mark.slow
def test_ppo_learns_envpool_cartpole_on_one_device(tmp_path):
    # The README's Sebulba command, unchanged, on one device: actors and learner share it.
    start = time.monotonic()
    result = _run_on_one_device(
        SYSTEMS["ff_ppo"],
        ["arch=sebulba", "env=envpool/cartpole", f"logger.base_exp_path={tmp_path}"],
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(read_metrics(tmp_path)).values()
    final_step = max((k for k in run if k.startswith("step_")), key=lambda k: int(k[5:]))
    final = float(np.mean(run[final_step]["episode_return"]))
    print(f"Sebulba PPO on one device: final {final:.1f} in {time.monotonic() - start:.0f} s")
    assert final >= 450, final
