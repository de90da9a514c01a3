"""Whole-run properties: seeds become separate runs, runs are reproducible, resume is exact."""

import os
import signal
import subprocess
import sys
import time

import pytest

from stoix.errors import TrainingDiverged
from stoix.runners.anakin import run_anakin_measured
from stoix.systems.ppo.anakin import ff_ppo
from stoix.utils.entry import compose_config
from tests.helpers import REPO, TEST_XLA_FLAGS, TINY, read_metrics, run_script, runs_of


def test_four_seeds_are_four_runs_and_differ(tmp_path):
    cfg = compose_config(
        "ff_ppo",
        [
            *TINY,
            "arch.total_timesteps=4096",
            "arch.num_seeds=4",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    ff_ppo.run_experiment(cfg)
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43", "seed_44", "seed_45"]
    finals = {tuple(r["step_1"]["episode_return"]) for r in runs.values()}
    assert len(finals) == 4, "independent seeds must not produce identical evaluations"


def test_eight_pqn_seeds_in_one_program_are_eight_json_runs(tmp_path):
    from stoix.systems.q_learning.anakin import ff_pqn

    cfg = compose_config(
        "ff_pqn",
        [
            *TINY,
            "arch.total_timesteps=4096",
            "system.rollout_length=16",
            "system.num_minibatches=2",
            "arch.num_seeds=8",
            "arch.seed=0",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    ff_pqn.run_experiment(cfg)
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == sorted(f"seed_{s}" for s in range(8))
    finals = {tuple(r["step_1"]["episode_return"]) for r in runs.values()}
    assert len(finals) > 1, "independent seeds must not all produce identical evaluations"


def test_learning_rate_by_seed_grid_in_one_program(tmp_path):
    # 2 learning rates × 2 seeds = 4 JSON runs (tests/test_pqn.py checks each run's rate is used).
    from stoix.systems.q_learning.anakin import ff_pqn

    common = [*TINY, "arch.total_timesteps=4096", "system.rollout_length=16", "arch.seed=0"]
    common += ["system.num_minibatches=2", "system.epsilon_start=0.0", "system.epsilon_end=0.0"]
    cfg = compose_config(
        "ff_pqn",
        [
            *common,
            "arch.num_seeds=2",
            "arch.sweep.key=system.q_lr",
            "arch.sweep.values=[0.0,0.003]",
            f"logger.base_exp_path={tmp_path / 'grid'}",
        ],
    )
    ff_pqn.run_experiment(cfg)
    runs = runs_of(read_metrics(tmp_path / "grid"))
    assert sorted(runs) == [
        "q_lr=0.003_seed_0",
        "q_lr=0.003_seed_1",
        "q_lr=0_seed_0",
        "q_lr=0_seed_1",
    ]
    for run in runs.values():
        assert run["step_1"]["step_count"] == 4096
        assert len(run["absolute_metrics"]["episode_return"]) == 8


def test_a_key_the_system_cannot_sweep_is_one_clear_error(tmp_path):
    from stoix.errors import ConfigError

    cfg = compose_config(
        "ff_ppo",
        [
            *TINY,
            "arch.sweep.key=system.actor_lr",
            "arch.sweep.values=[1e-4,3e-4]",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    with pytest.raises(ConfigError, match="arch.sweep.key=system.actor_lr cannot be swept by"):
        ff_ppo.run_experiment(cfg)
    assert not any(tmp_path.iterdir())


def test_same_seed_same_numbers(tmp_path):
    overrides = [*TINY, "arch.total_timesteps=4096", "logger.use_tb=False"]
    results = []
    for name in ("a", "b"):
        cfg = compose_config("ff_ppo", [*overrides, f"logger.base_exp_path={tmp_path / name}"])
        ff_ppo.run_experiment(cfg)
        results.append(runs_of(read_metrics(tmp_path / name)))
    assert results[0] == results[1]


RESUME_OVERRIDES = [
    "arch.total_num_envs=16",
    "arch.total_timesteps=122880",
    "arch.num_evaluation=6",
    "arch.num_eval_episodes=8",
    "arch.absolute_metric_episode_multiplier=2",
    "logger.use_tb=False",
]


# Rainbow's learner state holds a prioritised n-step replay buffer (contents, sum tree of
# priorities), target parameters and noisy-network keys: all of them must survive the restart.
RESUMABLE = {
    "ff_ppo": ("stoix/systems/ppo/anakin/ff_ppo.py", []),
    "ff_rainbow": (
        "stoix/systems/q_learning/anakin/ff_rainbow.py",
        ["system.buffer_size=8192"],
    ),
}


@pytest.mark.parametrize(
    "system",
    [
        "ff_ppo",
        # Four minutes on 2 cores: the slow tier (`make bench`) keeps the Rainbow case.
        pytest.param("ff_rainbow", marks=pytest.mark.slow),
    ],
)
def test_kill_9_then_resume_is_exact_and_another_config_is_refused(system, tmp_path):
    script, extra = RESUMABLE[system]
    overrides = [*RESUME_OVERRIDES, *extra]
    reference = run_script(script, [*overrides, f"logger.base_exp_path={tmp_path / 'reference'}"])
    assert reference.returncode == 0, reference.stderr[-2000:]

    # Start the same run with checkpointing and kill it hard once a second checkpoint exists.
    killed_base = tmp_path / "killed"
    args = [
        *overrides,
        f"logger.base_exp_path={killed_base}",
        "logger.checkpointing.save_model=True",
    ]
    env = dict(os.environ, XLA_FLAGS=TEST_XLA_FLAGS, JAX_PLATFORMS="cpu")
    process = subprocess.Popen(
        [sys.executable, str(REPO / script), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    second_checkpoint = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            found = [p for p in killed_base.rglob("checkpoints/1") if p.is_dir()]
        except FileNotFoundError:  # orbax renamed a temporary folder while we walked the tree
            found = []
        if found:
            second_checkpoint = found[0]
            break
        time.sleep(0.01)
    assert second_checkpoint is not None, "the run never wrote its second checkpoint"
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = runs_of(read_metrics(killed_base))["seed_42"]
    assert "step_5" not in partial and "absolute_metrics" not in partial

    resumed = run_script(
        script,
        [
            *args[:-1],
            "logger.checkpointing.load_model=True",
            "logger.checkpointing.save_model=True",
        ],
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout
    assert runs_of(read_metrics(killed_base)) == runs_of(read_metrics(tmp_path / "reference"))

    # The same checkpoint offered to a run of another config is refused in one line naming the
    # key that differs, before anything compiles or is written.
    run_dir = next(killed_base.rglob("checkpoints")).parent
    other_base = tmp_path / "other"
    other = run_script(
        script,
        [
            *overrides,
            "system.gamma=0.9",
            f"logger.base_exp_path={other_base}",
            f"logger.checkpointing.load_path={run_dir}",
        ],
    )
    assert other.returncode == 2
    lines = [line for line in other.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "system.gamma" in lines[0], other.stderr
    assert not other_base.exists()


def test_divergence_stops_the_run_naming_the_step(tmp_path):
    cfg = compose_config(
        "ff_ppo",
        [
            *TINY,
            "arch.total_timesteps=2048",
            "system.actor_lr=1e30",
            "system.critic_lr=1e30",
            "system.decay_learning_rates=False",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    with pytest.raises(TrainingDiverged, match=r"non-finite .*actor_loss.* at step 1,024"):
        ff_ppo.run_experiment(cfg)


def test_nothing_compiles_after_start_up(tmp_path):
    # Logging, evaluation, best-params tracking and checkpointing reuse the programs compiled
    # at start-up: a period must never trigger a compilation.
    cfg = compose_config(
        "ff_ppo",
        [
            *TINY,
            "arch.total_timesteps=4096",
            "arch.num_evaluation=4",
            "arch.num_seeds=2",
            "logger.checkpointing.save_model=True",
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    result = run_anakin_measured(cfg, ff_ppo.SYSTEM)
    assert result.compilations_after_startup == 0, result
