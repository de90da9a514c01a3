"""bench/behaviour_identity.py: its comparison tells identical runs from any difference, and its
cases name system files and overrides that exist (running them is the script's job)."""

import importlib.util
import json
import math

import pytest

from stoix.utils.entry import compose_config
from tests.helpers import REPO


def _script():
    spec = importlib.util.spec_from_file_location(
        "behaviour_identity", REPO / "bench" / "behaviour_identity.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN = {
    "marl_eval": {"gymnax": {"cartpole": {"ff_ppo": {"seed_42": {"step_0": {"x": [1.0, 2.0]}}}}}},
    "scalars": {"seed_42": {"train/actor_loss": [[2048, -0.0018258824711665511]]}},
}


def test_identical_runs_compare_identical(capsys):
    script = _script()
    assert script.compare({"ff_ppo": RUN}, {"ff_ppo": json.loads(json.dumps(RUN))})
    assert "identical (1 scalars)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change",
    [
        # The smallest change a float can make.
        lambda run: run["scalars"]["seed_42"]["train/actor_loss"][0].__setitem__(
            1, math.nextafter(-0.0018258824711665511, 0.0)
        ),
        lambda run: run["marl_eval"]["gymnax"]["cartpole"]["ff_ppo"]["seed_42"].pop("step_0"),
        lambda run: run.update({"error": "exit 1: boom"}),
    ],
)
def test_any_difference_or_failure_is_reported(change, capsys):
    script = _script()
    after = json.loads(json.dumps(RUN))
    change(after)
    assert not script.compare({"ff_ppo": RUN}, {"ff_ppo": after})
    assert "identical" not in capsys.readouterr().out


def test_every_case_names_a_system_file_whose_config_composes():
    script = _script()
    for case in script.CASES:
        assert (REPO / case.script).is_file(), case
        name = case.script.rsplit("/", 1)[1].removesuffix(".py")
        compose_config(name, list(case.overrides))
