"""Property: whatever mix of overrides a user types, the run either refuses it with one line
naming a key, before anything is written, or runs.

Draws mix valid values (chosen inside the relations, so a mix of only valid values must be
accepted), wrong types, out-of-range numbers, non-integral integers and unknown keys (plain,
`+` and `++`). Most draws run in-process: the command-line checks, then Hydra's own override
code applies the draw to a config composed once per system, then the schema, the run plan and
the system's validator. A few draws run the system file end to end. Hypothesis is derandomised,
so CI draws the same cases every time.
"""

import copy
import json
import string
from dataclasses import dataclass, field
from types import ModuleType
from typing import Mapping, Sequence

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from stoix.errors import ConfigError
from stoix.systems.ppo.anakin import ff_ppo
from stoix.systems.q_learning.anakin import ff_dqn
from stoix.systems.sac.anakin import ff_sac
from stoix.utils.config import make_run_plan
from stoix.utils.entry import compose_config, group_index
from stoix.utils.overrides import check_command_line, check_keys, parse_overrides
from tests.helpers import TINY, run_script

BASE = (*TINY, "arch.total_timesteps=512")
INDEX = group_index("default/anakin")
QUICK = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Mutation:
    """One override and whether the schema, plan and system must accept it."""

    key: str
    text: str
    valid: bool


def fraction() -> st.SearchStrategy[float]:
    return st.floats(0.0, 1.0, allow_nan=False, allow_subnormal=False)


def positive(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_subnormal=False)


@dataclass(frozen=True)
class Case:
    """A system and the values its keys may take in a tiny run (relations kept: minibatches
    divide every batch, batches fit their buffers, warm-up covers the n-step window)."""

    config: str
    script: str
    module: ModuleType
    valid: Mapping[str, st.SearchStrategy]
    counts: Sequence[str]  # integers of at least 1
    fractions: Sequence[str]  # numbers in [0, 1]
    positives: Sequence[str]  # numbers above 0
    flags: Sequence[str] = field(default=("arch.evaluation_greedy", "logger.use_tb"))


COMMON = {
    "arch.seed": st.integers(0, 2**30 - 1),
    "arch.evaluation_greedy": st.booleans(),
    "arch.eval_max_steps": st.sampled_from([None, 50, 600]),
    "system.gamma": fraction(),
}
PPO = Case(
    "ff_ppo",
    "stoix/systems/ppo/anakin/ff_ppo.py",
    ff_ppo,
    {
        **COMMON,
        "system.epochs": st.sampled_from([1, 2]),
        "system.num_minibatches": st.sampled_from([1, 2, 4, 8]),
        "system.rollout_length": st.sampled_from([8, 16]),
        "system.gae_lambda": fraction(),
        "system.clip_epsilon": positive(0.0, 1.0),
        "system.actor_lr": positive(1e-6, 1e-2),
        "system.max_grad_norm": positive(0.1, 10.0),
        "system.standardise_advantages": st.booleans(),
    },
    counts=("system.epochs", "system.num_minibatches", "system.rollout_length"),
    fractions=("system.gamma", "system.gae_lambda"),
    positives=("system.max_grad_norm",),
)
REPLAY = {
    "system.batch_size": st.sampled_from([16, 32, 64]),
    "system.buffer_size": st.sampled_from([1024, 4096]),
    "system.gradient_steps_per_update": st.sampled_from([1, 2]),
    "system.n_step": st.sampled_from([1, 2, 3]),
    "system.tau": fraction(),
}
REPLAY_COUNTS = (
    "system.batch_size",
    "system.buffer_size",
    "system.n_step",
    "system.rollout_length",
)
DQN = Case(
    "ff_dqn",
    "stoix/systems/q_learning/anakin/ff_dqn.py",
    ff_dqn,
    {
        **COMMON,
        **REPLAY,
        "system.rollout_length": st.sampled_from([4, 8]),
        "system.warmup_steps": st.sampled_from([8, 16]),
        "system.q_lr": positive(1e-6, 1e-2),
        "system.epsilon_end": fraction(),
        "system.target_update_period": st.integers(1, 20),
        "system.prioritised_replay": st.booleans(),
    },
    counts=(*REPLAY_COUNTS, "system.target_update_period"),
    fractions=("system.gamma", "system.tau", "system.epsilon_end"),
    positives=("system.max_grad_norm", "system.adam_eps"),
)
SAC = Case(
    "ff_sac",
    "stoix/systems/sac/anakin/ff_sac.py",
    ff_sac,
    {
        **COMMON,
        **REPLAY,
        "system.rollout_length": st.sampled_from([2, 4]),
        "system.warmup_steps": st.sampled_from([4, 8, 16]),
        "system.critic_lr": positive(1e-6, 1e-2),
        "system.init_alpha": positive(0.01, 2.0),
        "system.autotune_alpha": st.booleans(),
        "system.reward_scale": positive(0.1, 10.0),
    },
    counts=REPLAY_COUNTS,
    fractions=("system.gamma", "system.tau"),
    positives=("system.init_alpha", "system.critic_lr", "system.reward_scale"),
)


def typed(value: object) -> str:
    """A value as the command line writes it."""
    return "null" if value is None else repr(value)


def mutations(case: Case) -> st.SearchStrategy[Mutation]:
    keys = sorted(case.valid)
    valid = st.sampled_from(keys).flatmap(
        lambda k: case.valid[k].map(lambda v: Mutation(k, f"{k}={typed(v)}", True))
    )
    non_integral = st.tuples(st.sampled_from(case.counts), st.integers(1, 64)).map(
        lambda kv: Mutation(kv[0], f"{kv[0]}={kv[1]}.5", False)
    )
    too_small = st.tuples(st.sampled_from(case.counts), st.integers(-100, 0)).map(
        lambda kv: Mutation(kv[0], f"{kv[0]}={kv[1]}", False)
    )
    outside = st.tuples(
        st.sampled_from(case.fractions), st.sampled_from([-0.5, 1.01, 2.0, 1e9])
    ).map(lambda kv: Mutation(kv[0], f"{kv[0]}={kv[1]}", False))
    not_positive = st.tuples(st.sampled_from(case.positives), st.sampled_from([0, -1, -0.5])).map(
        lambda kv: Mutation(kv[0], f"{kv[0]}={kv[1]}", False)
    )
    numeric = (*case.counts, *case.fractions, *case.positives)
    wrong_type = st.one_of(
        st.tuples(st.sampled_from(numeric), st.sampled_from(["abc", "[1,2]", "true", "null"])),
        st.tuples(st.sampled_from(case.flags), st.sampled_from(["1", "0.5", "yes", "[true]"])),
    ).map(lambda kv: Mutation(kv[0], f"{kv[0]}={kv[1]}", False))
    name = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8).map(lambda s: "zz" + s)
    unknown = st.tuples(
        st.sampled_from(["", "+", "++"]),
        st.sampled_from(["system", "arch", "logger.checkpointing", "network.actor_network"]),
        name,
    ).map(lambda p: Mutation(f"{p[1]}.{p[2]}", f"{p[0]}{p[1]}.{p[2]}=1", False))
    # Valid values weigh as much as all the kinds of mistake together, so many mixes are
    # valid throughout and must run.
    mistakes = (non_integral, too_small, outside, not_positive, wrong_type, unknown)
    return st.one_of(*([valid] * len(mistakes)), *mistakes)


def mixes(case: Case) -> st.SearchStrategy[list[Mutation]]:
    # One override per key: Hydra keeps the last of several, which would hide the others.
    return st.lists(mutations(case), min_size=1, max_size=4, unique_by=lambda m: m.key)


_BASES: dict[str, DictConfig] = {}


def base_config(case: Case) -> DictConfig:
    if case.config not in _BASES:
        _BASES[case.config] = compose_config(case.config, BASE)
    return _BASES[case.config]


def apply(case: Case, texts: Sequence[str]) -> DictConfig:
    """What `compose_config(case.config, BASE + texts)` gives, without composing again."""
    parsed = parse_overrides(texts, INDEX)
    check_command_line(parsed, INDEX, multirun=False)
    base = base_config(case)
    check_keys(parsed.keys, base)
    cfg = copy.deepcopy(base)
    ConfigLoaderImpl._apply_overrides_to_config(list(parsed.keys), cfg)
    return cfg


def refusal(case: Case, texts: Sequence[str]) -> str | None:
    """The one-line refusal of the checks a run makes before building anything, or None."""
    try:
        cfg = apply(case, texts)
        case.module.SYSTEM.validate(cfg, make_run_plan(cfg, 2))
    except ConfigError as err:
        return str(err)
    return None


def check_outcome(mix: list[Mutation], refused: str | None) -> None:
    bad = [m.key for m in mix if not m.valid]
    if not bad:
        assert refused is None, f"{[m.text for m in mix]} was refused: {refused}"
        return
    assert refused is not None, f"{[m.text for m in mix]} was accepted"
    assert "\n" not in refused
    assert any(key in refused for key in bad), f"{refused!r} names none of {bad}"


@pytest.mark.parametrize("case", [PPO, DQN, SAC], ids=lambda c: c.config)
def test_each_mix_is_refused_naming_a_bad_key_or_accepted(case):
    @settings(QUICK, max_examples=200)
    @given(mix=mixes(case))
    def check(mix: list[Mutation]) -> None:
        check_outcome(mix, refusal(case, [m.text for m in mix]))

    check()


@pytest.mark.parametrize("case", [PPO, DQN, SAC], ids=lambda c: c.config)
def test_the_in_process_configs_are_the_composed_ones(case):
    @settings(QUICK, max_examples=4)
    @given(mix=mixes(case))
    def check(mix: list[Mutation]) -> None:
        texts = [m.text for m in mix]
        try:
            composed = compose_config(case.config, [*BASE, *texts])
        except ConfigError as err:
            with pytest.raises(ConfigError) as fast_err:
                apply(case, texts)
            assert str(fast_err.value) == str(err)
            return
        fast = apply(case, texts)
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(composed)

    check()


@settings(QUICK, max_examples=1, phases=[Phase.explicit, Phase.generate])
@example(mix=[Mutation("system.epochs", "system.epochs=1.5", False)])
@example(
    mix=[
        Mutation("system.rollout_length", "system.rollout_length=16", True),
        Mutation("arch.eval_max_steps", "arch.eval_max_steps=50", True),
    ]
)
@given(mix=mixes(PPO))
def test_the_system_file_refuses_in_one_line_or_runs(mix, tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    result = run_script(PPO.script, [*BASE, *(m.text for m in mix), f"logger.base_exp_path={base}"])
    if all(m.valid for m in mix):
        assert result.returncode == 0, result.stderr[-2000:]
        (metrics,) = base.rglob("metrics.json")
        assert json.loads(metrics.read_text())
        return
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stoix: error: "), result.stderr
    check_outcome(mix, lines[0])
    assert not any(base.iterdir())
