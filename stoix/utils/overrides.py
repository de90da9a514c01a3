"""Command-line overrides checked before Hydra composes them, so each mistake is one line.

Hydra reports a mistyped key, a missing group option or a bad override over several lines (and
from inside `hydra.main`, with exit status 1). Here the overrides are parsed with Hydra's own
grammar and sorted into group choices (`env=gymnax/cartpole`, `+group/x=y`), config keys
(`system.gamma=0.9`, `++env.kwargs.x=1`) and Hydra's own (`hydra.*`, `hydra/*`, left to Hydra).
Group choices are checked against the option files in the config search path; keys against a
config composed with those choices. New keys (`+key`, `++key`) are refused except inside a
free-form mapping of the schema (`env.kwargs`), so a typo never becomes a key nobody reads.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override, ValueType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stoix.errors import ConfigError
from stoix.utils.schema import SCHEMAS
from stoix.utils.schema_types import FreeForm, Schema, closest, suggest_key, suggestion

Compose = Callable[[Sequence[str]], DictConfig]


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@dataclass(frozen=True)
class GroupIndex:
    """The config groups and their options: folders and YAML files under the search path."""

    roots: tuple[Path, ...]

    @cached_property
    def _options(self) -> dict[str, tuple[str, ...]]:
        options: dict[str, set[str]] = {}
        for root in self.roots:
            for folder in [p for p in root.rglob("*") if p.is_dir()]:
                group = folder.relative_to(root).as_posix()
                if any(part.startswith(("_", ".")) for part in group.split("/")):
                    continue  # __pycache__ and the like hold no configs
                found = options.setdefault(group, set())
                found.update(
                    f.relative_to(folder).with_suffix("").as_posix() for f in folder.rglob("*.yaml")
                )
        return {group: tuple(sorted(found)) for group, found in options.items()}

    def is_group(self, name: str) -> bool:
        return name in self._options

    def options(self, group: str) -> tuple[str, ...]:
        return self._options.get(group, ())

    def top_level_groups(self) -> tuple[str, ...]:
        return tuple(g for g in self._options if "/" not in g)


class ParsedOverrides(NamedTuple):
    """A command line's overrides, sorted by what they change."""

    groups: tuple[Override, ...]  # choices of config groups
    keys: tuple[Override, ...]  # config values
    hydra: tuple[Override, ...]  # Hydra's own settings and plugins, passed through


def _is_hydra(name: str) -> bool:
    return name == "hydra" or name.startswith(("hydra.", "hydra/"))


def parse_overrides(texts: Sequence[str], index: GroupIndex) -> ParsedOverrides:
    """Parses each override with Hydra's grammar; one that does not parse is a one-line error."""
    parser = OverridesParser.create()
    groups, keys, hydra = [], [], []
    for text in texts:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as err:
            detail = str(err).splitlines()
            reason = detail[1].strip() if len(detail) > 1 else first_line(err)
            # ANTLR goes on to list every token it expected: long, and no help to a user.
            reason = reason.split(" expecting ")[0]
            raise ConfigError(f"cannot parse the override {text!r}: {reason}") from None
        name = override.key_or_group
        if _is_hydra(name):
            hydra.append(override)
        elif "." not in name and ("/" in name or index.is_group(name)):
            groups.append(override)
        else:
            keys.append(override)
    return ParsedOverrides(tuple(groups), tuple(keys), tuple(hydra))


def _choices(override: Override, options: Sequence[str]) -> list[str | None]:
    """The options a group override asks for (each option of a sweep over the group)."""
    if not override.is_sweep_override():
        value = override.value()
        return [None if value is None else str(value)]
    if override.value_type is ValueType.GLOB_CHOICE_SWEEP:
        glob = override.value()
        assert isinstance(glob, Glob)
        matched = glob.filter(list(options))
        if not matched:
            raise ConfigError(
                f"{override.input_line} matches no option of group {override.key_or_group}"
            )
        return list(matched)
    if not override.is_choice_sweep():
        raise ConfigError(
            f"{override.input_line}: a config group sweeps over a list of options "
            "(e.g. env=gymnax/cartpole,gymnax/acrobot), not a range or interval"
        )
    return list(override.sweep_string_iterator())


def check_command_line(parsed: ParsedOverrides, index: GroupIndex, multirun: bool) -> None:
    """What needs no composition: deletions, sweeps without -m, and unknown group options."""
    for override in (*parsed.groups, *parsed.keys):
        if override.is_delete():
            raise ConfigError(
                f"{override.input_line}: removing a config key or group is not supported; "
                "set the key or choose another option instead"
            )
    for override in parsed.keys:
        if override.is_sweep_override() and not multirun:
            raise ConfigError(f"{override.input_line} is a sweep; run it with -m (--multirun)")
    for override in parsed.groups:
        group = override.key_or_group
        if override.is_sweep_override() and not multirun:
            raise ConfigError(f"{override.input_line} is a sweep; run it with -m (--multirun)")
        options = index.options(group)
        if not index.is_group(group):
            close = suggestion(group, index.top_level_groups())
            raise ConfigError(f"{override.input_line}: {group} is not a config group{close}")
        for choice in _choices(override, options):
            if choice is None:
                raise ConfigError(
                    f"{group}=null would leave the config without its {group}; choose an "
                    f"option of group {group} (e.g. {', '.join(options[:3])})"
                )
            if choice not in options:
                raise ConfigError(
                    f"{group}={choice} is not an option of group {group}{closest(choice, options)}"
                )


def _group_texts(parsed: ParsedOverrides, index: GroupIndex) -> list[str]:
    """The group choices to compose with (a sweep's first option stands for all of them)."""
    texts = []
    for override in parsed.groups:
        first = _choices(override, index.options(override.key_or_group))[0]
        texts.append(f"{override.get_key_element()}={first}")
    return texts


def _paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a plain config, its mappings included (the names one may override)."""
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            yield path
            yield from _paths(value, path)


_ABSENT = object()


def _exists(cfg: DictConfig, key: str) -> bool:
    found = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
    return found is not _ABSENT


def _free_form(key: str) -> bool:
    return isinstance(SCHEMAS["anakin"].spec_for(key), FreeForm)


def check_keys(keys: Sequence[Override], cfg: DictConfig) -> None:
    """Each key override names a key of `cfg` (composed with the same group choices)."""
    known: list[str] | None = None
    for override in keys:
        key = override.key_or_group
        exists = _exists(cfg, key)
        if override.is_add() and exists:
            raise ConfigError(f"+{key}: {key} is already a key; set it without '+' ({key}=...)")
        if exists or ((override.is_add() or override.is_force_add()) and _free_form(key)):
            continue
        if _free_form(key):
            raise ConfigError(f"{key} is not in this config yet; add it with +{key}=...")
        if known is None:
            known = list(_paths(OmegaConf.to_container(cfg, resolve=False)))
        raise ConfigError(f"unknown key {key}{suggest_key(key, known)}")


def compose_checked(
    compose: Compose, parsed: ParsedOverrides, index: GroupIndex, texts: Sequence[str]
) -> DictConfig:
    """Composes `texts` (the command line's overrides, or their concrete part); a composition
    Hydra refuses, a new key outside a free-form mapping and an unknown swept key become one
    line naming the key."""
    try:
        cfg = compose(texts)
    except (HydraException, OmegaConfBaseException) as err:
        try:
            base = compose(_group_texts(parsed, index))
        except (HydraException, OmegaConfBaseException):
            raise ConfigError(first_line(err)) from None
        check_keys(parsed.keys, base)
        raise ConfigError(first_line(err)) from None
    # Composition applied `+key` and `++key` without asking whether the key existed before.
    added = [
        o
        for o in parsed.keys
        if (o.is_add() or o.is_force_add()) and not _free_form(o.key_or_group)
    ]
    if added:
        check_keys(added, compose(_group_texts(parsed, index)))
    check_keys([o for o in parsed.keys if o.is_sweep_override()], cfg)
    return cfg


def check_swept_values(parsed: ParsedOverrides, schema: Schema) -> None:
    """Each value a sweep lists, and both ends of an interval, fit the swept key's spec, so a
    bad value stops the sweep before its first job (relations are checked in each job)."""
    for override in parsed.keys:
        spec = schema.spec_for(override.key_or_group)
        if spec is None or not override.is_sweep_override():
            continue
        if override.is_discrete_sweep():
            values = list(override.sweep_iterator())
        else:
            interval = override.value()
            values = [interval.start, interval.end]
        for value in values:
            try:
                spec.check(override.key_or_group, value)
            except ConfigError as err:
                raise ConfigError(f"{err} (in the sweep {override.input_line})") from None


def concrete_texts(parsed: ParsedOverrides, index: GroupIndex) -> list[str]:
    """The overrides one run of the command line would compose: group choices (a sweep's
    first option) and every key override that is not a sweep."""
    keys = [o.input_line for o in parsed.keys if not o.is_sweep_override()]
    return [*_group_texts(parsed, index), *keys]
