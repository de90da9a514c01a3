"""Optuna sweeps through Hydra's sweeper plugin: the objective is the final evaluation return."""

import json
from pathlib import Path

import numpy as np
import yaml

from tests.helpers import run_script

TINY_PPO = (
    "arch.total_num_envs=8",
    "arch.num_evaluation=1",
    "arch.num_eval_episodes=8",
    "arch.absolute_metric=False",
    "arch.total_timesteps=2048",
    "system.rollout_length=16",
    "system.num_minibatches=2",
    "logger.use_console=False",
    "logger.use_tb=False",
)


def _final_return(metrics_file: Path) -> float:
    document = json.loads(metrics_file.read_text())
    (env,) = document.values()
    (task,) = env.values()
    (system,) = task.values()
    (run,) = system.values()
    last = max((k for k in run if k.startswith("step_")), key=lambda k: int(k.split("_")[1]))
    return float(np.mean(run[last]["episode_return"]))


def test_a_three_trial_optuna_sweep_maximises_the_final_return(tmp_path):
    result = run_script(
        "stoix/systems/ppo/anakin/ff_ppo.py",
        [
            "-m",
            "hydra/sweeper=ppo_optuna",
            "hydra.sweeper.n_trials=3",
            *TINY_PPO,
            f"logger.base_exp_path={tmp_path}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = tmp_path.rglob("optimization_results.yaml")
    best = yaml.safe_load(summary.read_text())
    assert set(best["best_params"]) == {
        "system.actor_lr",
        "system.critic_lr",
        "system.entropy_coefficient",
    }
    # One run per trial, each with the trial's own hyperparameters in its resolved config.
    runs = sorted(tmp_path.rglob("metrics.json"))
    assert len(runs) == 3
    returns = [_final_return(run) for run in runs]
    assert best["best_value"] == max(returns)
    configs = [yaml.safe_load((run.parent / "config.yaml").read_text()) for run in runs]
    assert len({c["system"]["actor_lr"] for c in configs}) == 3
