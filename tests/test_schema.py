"""The config schema covers every key of every config, and each spec refuses what it should."""

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from stoix.errors import ConfigError
from stoix.utils import schema
from stoix.utils.entry import CONFIG_ROOT, compose_config
from stoix.utils.schema import SCHEMAS, validate_config
from stoix.utils.schema_types import (
    AnyOf,
    Bool,
    Choice,
    Float,
    FreeForm,
    Int,
    ListOf,
    Nullable,
    Str,
    Target,
)

ENTRY_CONFIGS = sorted(
    (path.parent.name, path.stem) for path in (CONFIG_ROOT / "default").glob("*/*.yaml")
)
GROUPS = ("env", "network", "system", "logger")


def options(group: str, root: Path = CONFIG_ROOT) -> list[str]:
    folder = root / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def uncovered(root: Path) -> list[str]:
    """`file: key` for every leaf of every group option file the schema has no spec for."""
    missing = []
    for group in GROUPS:
        for option in options(group, root):
            node = OmegaConf.load(root / group / f"{option}.yaml")
            node.pop("defaults", None)  # the files they extend are options of the same group
            leaves = OmegaConf.to_container(node, resolve=False)
            assert isinstance(leaves, dict)
            stack = [(f"{group}.{k}", v) for k, v in leaves.items()]
            while stack:
                key, value = stack.pop()
                spec = SCHEMAS["anakin"].spec_for(key) or SCHEMAS["sebulba"].spec_for(key)
                if isinstance(value, dict) and spec is None:
                    stack.extend((f"{key}.{k}", v) for k, v in value.items())
                elif spec is None:
                    missing.append(f"{group}/{option}.yaml: {key}")
    return missing


def test_every_key_of_every_group_option_file_has_a_spec():
    assert uncovered(CONFIG_ROOT) == []


def test_a_new_key_without_a_spec_is_caught(tmp_path):
    # A copy of the config tree with one undocumented key: the coverage test must see it.
    for group in GROUPS:
        for option in options(group):
            target = tmp_path / group / f"{option}.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text((CONFIG_ROOT / group / f"{option}.yaml").read_text())
    with open(tmp_path / "system" / "ppo" / "ff_ppo.yaml", "a") as file:
        file.write("clip_epsilon_decay: 0.5\n")
    assert uncovered(tmp_path) == ["system/ppo/ff_ppo.yaml: system.clip_epsilon_decay"]


@pytest.mark.parametrize("arch, name", ENTRY_CONFIGS)
def test_every_entry_config_fits_the_schema(arch, name):
    validate_config(compose_config(name, arch_dir=f"default/{arch}"))


def _not_a_default(group: str) -> list[str]:
    used = set()
    for arch, name in ENTRY_CONFIGS:
        defaults = OmegaConf.load(CONFIG_ROOT / "default" / arch / f"{name}.yaml").defaults
        used.update(d[group] for d in defaults if isinstance(d, dict) and group in d)
    return [option for option in options(group) if option not in used]


def _option_batches() -> list[list[str]]:
    """Group options no entry config composes, a few per composition (each group once)."""
    lists = {group: _not_a_default(group) for group in GROUPS}
    rounds = max(len(found) for found in lists.values())
    return [
        [f"{group}={found[i]}" for group, found in lists.items() if i < len(found)]
        for i in range(rounds)
    ]


@pytest.mark.parametrize("overrides", _option_batches(), ids=lambda o: ",".join(o))
def test_every_other_group_option_composes_into_a_valid_config(overrides):
    validate_config(compose_config("ff_ppo", overrides))


def test_the_activations_are_the_networks_own():
    from stoix.networks.layers import ACTIVATIONS

    assert set(schema.ACTIVATIONS) == set(ACTIVATIONS)


# SPECS


@pytest.mark.parametrize("value", [1, 10**6, 1e6, 3.0, 2**40])
def test_int_takes_integers_and_integral_floats(value):
    Int(1).check("a.key", value)


@pytest.mark.parametrize(
    "spec, value, message",
    [
        (Int(1), 1.5, "1.5 must be a positive integer"),
        (Int(1), 0, "0 must be a positive integer"),
        (Int(1), True, "True must be a positive integer"),
        (Int(1), "3", "3 must be a positive integer"),
        (Int(1), math.inf, "inf must be a positive integer"),
        (Int(1), 10**400, f"{10**400} must be a positive integer"),
        (Int(0), -1, "-1 must be a non-negative integer"),
        (Int(2), 1, "1 must be an integer of at least 2"),
        (Int(0, 7), 8, "8 must be an integer in [0, 7]"),
        (Float(0.0, 1.0), 1.5, "1.5 must be in [0, 1]"),
        (Float(0.0, 1.0), "x", "x must be a finite number in [0, 1]"),
        (Float(0.0, 1.0), math.nan, "nan must be a finite number in [0, 1]"),
        (Float(0.0, low_open=True), 0, "0 must be positive"),
        (Float(0.0, low_open=True), False, "False must be a positive number"),
        (Float(0.0), -0.5, "-0.5 must be non-negative"),
        (Float(0.0, 1.0, low_open=True), 0.0, "0.0 must be in (0, 1]"),
        (Float(high=0.0), 0.5, "0.5 must be at most 0"),
        (Float(), [1], "[1] must be a finite number"),
        (Bool(), 1, "1 must be True or False"),
        (Bool(), "yes", "yes must be True or False"),
        (Str(), "", "'' must be a non-empty string"),
        (Str(), 3, "3 must be a non-empty string"),
        (Choice(("adam", "radam")), "sgd", "sgd must be one of adam, radam"),
        (Nullable(Int(1)), -3, "-3 must be a positive integer or null"),
        (ListOf(Int(1)), 3, "3 must be a list, e.g. [1,2]"),
        (ListOf(Int(1), min_length=1), [], "[] must be a list of at least 1 item(s)"),
        (AnyOf((Int(0), ListOf(Int(0)))), "0,1", "0,1 must be a list, e.g. [1,2]"),
        (FreeForm(), [1], "[1] must be a mapping, e.g. {a: 1}"),
        (Target(), "MLPTorso", "MLPTorso must be a dotted class name, e.g. "),
    ],
)
def test_specs_refuse_in_one_line(spec, value, message):
    with pytest.raises(ConfigError) as raised:
        spec.check("a.key", value)
    assert str(raised.value).startswith(f"a.key={message}")


def test_list_items_are_named_by_index():
    with pytest.raises(ConfigError, match=r"^a.key\[1\]=2.5 must be a positive integer$"):
        ListOf(Int(1)).check("a.key", [1, 2.5])


def test_nullable_and_any_of_accept_their_options():
    Nullable(Int(1)).check("a.key", None)
    AnyOf((Int(0), ListOf(Int(0)))).check("a.key", 3)
    AnyOf((Int(0), ListOf(Int(0)))).check("a.key", [0, 1])


@pytest.mark.parametrize(
    "target, message",
    [
        ("stoix.networks.torso.Nope", "stoix.networks.torso has no Nope"),
        ("stoix.no_such_module.Torso", "cannot import stoix.no_such_module"),
    ],
)
def test_targets_must_import(target, message):
    with pytest.raises(ConfigError, match=message):
        Target().check("a._target_", target)


# WHOLE CONFIGS


def ppo(*overrides: str):
    return compose_config("ff_ppo", overrides)


def refuses(cfg, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(cfg)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_unknown_key_is_refused_with_the_closest_names():
    cfg = ppo()
    OmegaConf.set_struct(cfg, False)
    cfg.system.gamme = 0.9
    refuses(cfg, "unknown key system.gamme (did you mean system.gamma?)")
    cfg = ppo()
    OmegaConf.set_struct(cfg, False)
    cfg.extra = {"a": 1}
    refuses(cfg, "unknown key extra.a")


def test_architecture_keys_belong_to_their_architecture():
    cfg = compose_config("ff_ppo", arch_dir="default/sebulba")
    OmegaConf.set_struct(cfg, False)
    cfg.arch.sweep = {"key": None, "values": []}
    refuses(cfg, "unknown key arch.sweep.key")
    refuses(ppo("arch.architecture_name=podracer"), "arch.architecture_name=podracer must be one")


def test_a_missing_key_is_refused():
    cfg = ppo()
    OmegaConf.set_struct(cfg, False)
    del cfg.arch["seed"]
    refuses(cfg, "arch.seed must be set")


def test_a_broken_interpolation_is_one_line():
    refuses(ppo("logger.base_exp_path=${arch.nope}"), "logger.base_exp_path")


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        ("ff_awr", ["system.batch_size=64", "system.buffer_size=1000"], "system.sequence_length"),
        ("ff_dqn", ["system.batch_size=256", "system.buffer_size=255"], "is larger than"),
        ("ff_dqn", ["system.warmup_steps=2", "system.n_step=3"], "system.warmup_steps=2 must"),
        ("ff_awr", ["system.warmup_steps=8"], "must be at least system.sequence_length=16"),
        ("ff_d4pg", ["system.v_min=1", "system.v_max=1"], "system.v_min=1 must be below"),
        ("ff_c51", ["network.q_network.q_head.v_min=200"], "q_head.v_min=200 must be below"),
        (
            "ff_pqn",
            ["network.q_network.pre_torso.use_batch_norm=True"],
            "use_layer_norm and network.q_network.pre_torso.use_batch_norm are both True",
        ),
        (
            "ff_dqn",
            ["network=visual_dqn", "network.q_network.pre_torso.kernel_sizes=[3,3]"],
            "kernel_sizes has 2",
        ),
    ],
)
def test_relations_between_keys(config, overrides, message):
    refuses(compose_config(config, overrides), message)


def test_relations_hold_at_their_bounds():
    validate_config(compose_config("ff_dqn", ["system.batch_size=256", "system.buffer_size=256"]))
    validate_config(compose_config("ff_dqn", ["system.warmup_steps=3", "system.n_step=3"]))
    validate_config(compose_config("ff_awr", ["system.batch_size=2", "system.buffer_size=32"]))


def test_a_network_keyword_its_class_does_not_take_is_refused():
    # A head swapped for one that takes the same keywords (none here) is fine...
    validate_config(
        ppo("network.actor_network.action_head._target_=stoix.networks.heads.NormalHead")
    )
    # ...but a Gaussian head's init_log_std means nothing to a categorical head.
    refuses(
        compose_config(
            "ff_ppo_continuous",
            ["network.actor_network.action_head._target_=stoix.networks.heads.CategoricalHead"],
        ),
        "network.actor_network.action_head.init_log_std is not an argument of "
        "stoix.networks.heads.CategoricalHead",
    )
