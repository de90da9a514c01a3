"""Every Anakin system runs end to end on two CPU devices, with seeds and an update batch."""

import importlib

import jax
import numpy as np
import pytest

from stoix.systems.ppo.anakin import ff_ppo, ff_ppo_continuous
from stoix.systems.q_learning.anakin import ff_pqn, rec_pqn
from stoix.utils.entry import compose_config
from tests.helpers import TINY, read_metrics, runs_of

SYSTEMS = [
    (ff_ppo, "ff_ppo", []),
    (ff_ppo_continuous, "ff_ppo_continuous", []),
    # CNN torsos on MinAtar run from the README's commands (tests/test_readme_commands.py, one
    # device): PQN's and DQN's in the default tier, PPO's in the slow tier.
    # Snake has an action mask: invalid moves must get zero probability in the categorical head.
    # The slow tier keeps it (90 s on 2 cores); the default run tests the masked head itself
    # (tests/test_networks.py) and the Snake adapter (tests/test_suite_adapters.py).
    pytest.param(
        ff_ppo,
        "ff_ppo",
        ["env=jumanji/snake", "network=cnn", "env.max_episode_steps=64"],
        marks=pytest.mark.slow,
    ),
    (ff_pqn, "ff_pqn", []),
    # The LSTM cell runs in tests/test_rec_pqn.py; the system code does not depend on the cell.
    (rec_pqn, "rec_pqn", []),
]


def test_two_devices_are_forced():
    assert jax.device_count() == 2


@pytest.mark.parametrize(
    "system, config, extra",
    SYSTEMS,
    ids=[
        "ff_ppo",
        "ff_ppo_continuous",
        "ff_ppo_cnn_snake",
        "ff_pqn",
        "rec_pqn_gru_recall",
    ],
)
def test_system_smoke_on_two_devices(system, config, extra, tmp_path):
    cfg = compose_config(
        config,
        [
            *TINY,
            "arch.total_timesteps=2048",
            "system.rollout_length=16",
            "system.num_minibatches=2",
            "arch.num_seeds=2",
            "arch.update_batch_size=2",
            f"logger.base_exp_path={tmp_path}",
            *extra,
        ],
    )
    result = system.run_experiment(cfg)
    assert np.isfinite(result)
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43"]
    for run in runs.values():
        assert sorted(k for k in run if k.startswith("step_")) == ["step_0", "step_1"]
        assert len(run["step_1"]["episode_return"]) == 4
        assert len(run["absolute_metrics"]["episode_return"]) == 8
        assert run["step_1"]["step_count"] == 2048
    assert (next(tmp_path.rglob("config.yaml"))).is_file()
    assert any(tmp_path.rglob("events.out.tfevents*"))


# ff_dqn and ff_ddqn at their defaults are covered by the variants below and the DQN learning test.
Q_SYSTEMS = [
    ("ff_dqn", ["network=mlp_dueling_dqn", "system.n_step=3", "system.tau=0"]),
    ("ff_mdqn", []),
    ("ff_dqn_reg", []),
    ("ff_c51", ["network=mlp_dueling_c51"]),
    ("ff_qr_dqn", []),
    ("ff_rainbow", []),
    # Snake's action mask must hold in ε-greedy and targets. (The visual dueling network on
    # MinAtar runs from the README's command, tests/test_readme_commands.py.)
    ("ff_ddqn", ["env=jumanji/snake", "network=visual_dqn", "env.max_episode_steps=64"]),
]


@pytest.mark.parametrize(
    "config, extra",
    Q_SYSTEMS,
    ids=[
        "ff_dqn_dueling_nstep_hard_target",
        "ff_mdqn",
        "ff_dqn_reg",
        "ff_c51_dueling",
        "ff_qr_dqn",
        "ff_rainbow",
        "ff_ddqn_visual_snake",
    ],
)
def test_q_system_smoke_on_two_devices(config, extra, tmp_path):
    module = importlib.import_module(f"stoix.systems.q_learning.anakin.{config}")
    cfg = compose_config(
        config,
        [
            *TINY,
            "arch.total_timesteps=1024",
            "system.rollout_length=8",
            "system.warmup_steps=8",
            "system.batch_size=16",
            "system.buffer_size=512",
            "arch.num_seeds=2",
            "arch.update_batch_size=2",
            f"logger.base_exp_path={tmp_path}",
            *extra,
        ],
    )
    result = module.run_experiment(cfg)
    assert np.isfinite(result)
    runs = runs_of(read_metrics(tmp_path))
    assert sorted(runs) == ["seed_42", "seed_43"]
    for run in runs.values():
        assert run["step_1"]["step_count"] == 1024
        assert len(run["absolute_metrics"]["episode_return"]) == 8
