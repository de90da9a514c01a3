"""Every Anakin system runs end to end on two CPU devices, with seeds and an update batch."""

import jax
import numpy as np
import pytest

from stoix.systems.ppo.anakin import ff_ppo, ff_ppo_continuous
from stoix.utils.entry import compose_config
from tests.helpers import TINY, read_metrics, runs_of

SYSTEMS = [
    (ff_ppo, "ff_ppo", []),
    (ff_ppo_continuous, "ff_ppo_continuous", []),
    (ff_ppo, "ff_ppo", ["env=gymnax/breakout", "network=cnn"]),
    # Snake has an action mask: invalid moves must get zero probability in the categorical head.
    (ff_ppo, "ff_ppo", ["env=jumanji/snake", "network=cnn", "env.max_episode_steps=64"]),
]


def test_two_devices_are_forced():
    assert jax.device_count() == 2


@pytest.mark.parametrize(
    "system, config, extra",
    SYSTEMS,
    ids=["ff_ppo", "ff_ppo_continuous", "ff_ppo_cnn_minatar", "ff_ppo_cnn_snake"],
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
