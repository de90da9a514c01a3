"""The building blocks of the config schema: value specs, sections, and the walk that checks a
composed config against them. The schema itself (every key's spec) is `stoix.utils.schema`."""

import abc
import dataclasses
import difflib
import importlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stoix.errors import ConfigError


def show(value: Any) -> str:
    """A value as messages print it: `sgd`, `1.5`, `[16, 16]`, `''`."""
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    return str(value)


def _bound(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


class Spec(abc.ABC):
    """What one config value may be; `check` raises a one-line `ConfigError` naming the key."""

    @abc.abstractmethod
    def check(self, key: str, value: Any) -> None:
        """Raises `ConfigError` ("key=value must be ...") unless `value` fits."""

    def refuse(self, key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{key}={show(value)} must be {expected}")


@dataclass(frozen=True)
class Int(Spec):
    """An integer in [low, high] (either bound may be open-ended)."""

    low: int | None = None
    high: int | None = None

    def expected(self) -> str:
        if self.high is None:
            if self.low == 1:
                return "a positive integer"
            if self.low == 0:
                return "a non-negative integer"
            if self.low is not None:
                return f"an integer of at least {self.low}"
            return "an integer"
        if self.low is None:
            return f"an integer of at most {self.high}"
        return f"an integer in [{self.low}, {self.high}]"

    def check(self, key: str, value: Any) -> None:
        integral = _is_number(value) and _is_finite(value) and value == int(value)
        in_range = integral and (self.low is None or value >= self.low)
        if not (in_range and (self.high is None or value <= self.high)):
            raise self.refuse(key, value, self.expected())


@dataclass(frozen=True)
class Float(Spec):
    """A finite number in [low, high]; `low_open` excludes `low` itself (e.g. positive)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def bounds(self) -> str:
        if self.high is None:
            if self.low == 0:
                return "positive" if self.low_open else "non-negative"
            if self.low is None:
                return ""
            return f"{'above' if self.low_open else 'at least'} {_bound(self.low)}"
        if self.low is None:
            return f"at most {_bound(self.high)}"
        return f"in {'(' if self.low_open else '['}{_bound(self.low)}, {_bound(self.high)}]"

    def check(self, key: str, value: Any) -> None:
        bounds = self.bounds()
        if not (_is_number(value) and _is_finite(value)):
            if bounds in ("positive", "non-negative"):
                raise self.refuse(key, value, f"a {bounds} number")
            raise self.refuse(key, value, f"a finite number {bounds}".rstrip())
        too_low = self.low is not None and (
            value <= self.low if self.low_open else value < self.low
        )
        if too_low or (self.high is not None and value > self.high):
            raise self.refuse(key, value, bounds)


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise self.refuse(key, value, "True or False")


@dataclass(frozen=True)
class Str(Spec):
    """A non-empty string."""

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise self.refuse(key, value, "a non-empty string")


@dataclass(frozen=True)
class Choice(Spec):
    options: tuple[str, ...]

    def check(self, key: str, value: Any) -> None:
        if value not in self.options:
            raise self.refuse(key, value, f"one of {', '.join(self.options)}")


@dataclass(frozen=True)
class Nullable(Spec):
    """`inner`, or null (YAML `null`, command line `null`)."""

    inner: Spec

    def check(self, key: str, value: Any) -> None:
        if value is None:
            return
        try:
            self.inner.check(key, value)
        except ConfigError as err:
            raise ConfigError(f"{err} or null") from None


@dataclass(frozen=True)
class ListOf(Spec):
    """A list whose every item is `item` (messages name the item as `key[i]`)."""

    item: Spec
    min_length: int = 0

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, (list, tuple)):
            raise self.refuse(key, value, "a list, e.g. [1,2]")
        if len(value) < self.min_length:
            raise self.refuse(key, value, f"a list of at least {self.min_length} item(s)")
        for index, item in enumerate(value):
            self.item.check(f"{key}[{index}]", item)


@dataclass(frozen=True)
class AnyOf(Spec):
    """The first of `options` that accepts the value; the message is the last one's."""

    options: tuple[Spec, ...]

    def check(self, key: str, value: Any) -> None:
        error: ConfigError | None = None
        for option in self.options:
            try:
                option.check(key, value)
                return
            except ConfigError as err:
                error = err
        assert error is not None
        raise error


@dataclass(frozen=True)
class FreeForm(Spec):
    """A mapping passed on as it is (e.g. `env.kwargs` to the suite); its contents are the
    receiver's to check."""

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise self.refuse(key, value, "a mapping, e.g. {a: 1}")


@dataclass(frozen=True)
class Target(Spec):
    """A `_target_`: the dotted name of an importable class."""

    def check(self, key: str, value: Any) -> None:
        if not isinstance(value, str) or "." not in value:
            raise self.refuse(key, value, "a dotted class name, e.g. stoix.networks.heads.QHead")
        import_target(key, value)


def import_target(key: str, dotted: str) -> Any:
    """The object a `_target_` names, or a one-line error saying why it cannot be imported."""
    module_name, _, attribute = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}={dotted}: cannot import {module_name} ({err})") from None
    if not hasattr(module, attribute):
        public = [name for name in dir(module) if not name.startswith("_")]
        close = [f"{module_name}.{c}" for c in difflib.get_close_matches(attribute, public, n=3)]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"{key}={dotted}: {module_name} has no {attribute}{hint}")
    return getattr(module, attribute)


def accepted_keywords(target: Any) -> frozenset[str] | None:
    """The keyword arguments a class takes (dataclass fields for flax modules); None when any."""
    if dataclasses.is_dataclass(target):
        return frozenset(f.name for f in dataclasses.fields(target) if f.init)
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


@dataclass(frozen=True)
class Section:
    """The keys under one top-level node, dotted relative to it (e.g. `checkpointing.keep_best`).

    required: every key must be present (arch, env and logger always carry all theirs); system
        and network sections hold only the keys their system or network uses.
    """

    keys: Mapping[str, Spec]
    required: bool


@dataclass(frozen=True)
class Schema:
    """Sections by top-level key, and the relations checked once every value has its type."""

    sections: Mapping[str, Section]
    relations: Sequence[Callable[[DictConfig], None]]

    def spec_for(self, dotted: str) -> Spec | None:
        """The spec of a full dotted key; keys inside a `FreeForm` mapping get that mapping's."""
        section_name, _, rest = dotted.partition(".")
        section = self.sections.get(section_name)
        if section is None or not rest:
            return None
        parts = rest.split(".")
        for end in range(1, len(parts) + 1):
            spec = section.keys.get(".".join(parts[:end]))
            if spec is not None and (end == len(parts) or isinstance(spec, FreeForm)):
                return spec
        return None

    def known_keys(self) -> list[str]:
        return [f"{name}.{key}" for name, section in self.sections.items() for key in section.keys]


def _nearest(name: str, candidates: Sequence[str], cutoff: float) -> list[str]:
    return difflib.get_close_matches(name, candidates, n=3, cutoff=cutoff)


def closest(name: str, candidates: Sequence[str]) -> str:
    """` (closest: a, b, c)`: the three candidates most like `name`; empty without any."""
    nearest = _nearest(name, candidates, 0.0)
    return f" (closest: {', '.join(nearest)})" if nearest else ""


def suggestion(name: str, candidates: Sequence[str]) -> str:
    """` (did you mean a?)` when a candidate is close to `name`, else `closest`'s list."""
    close = _nearest(name, candidates, 0.6)
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    return closest(name, candidates)


def suggest_key(key: str, known: Sequence[str]) -> str:
    """`suggestion` for a dotted key, matched among the keys beside it where there are any
    (`system.gamme` against the other `system.*` names, not against the whole config)."""
    parent, _, name = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    if not siblings:
        return suggestion(key, known)
    close = _nearest(name, list(siblings), 0.6)
    if close:
        return f" (did you mean {' or '.join(siblings[c] for c in close)}?)"
    nearest = _nearest(name, list(siblings), 0.0)
    return f" (closest: {', '.join(siblings[c] for c in nearest)})"


def _leaves(node: Any, prefix: str, schema: Schema) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every value the schema checks: scalars, lists, and whole
    mappings where the schema has a spec for the mapping itself (FreeForm, or a misplaced {...})."""
    for name, value in node.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        # Top-level sections always open; deeper mappings open unless a spec takes them whole.
        if isinstance(value, dict) and ("." not in key or schema.spec_for(key) is None):
            yield from _leaves(value, key, schema)
        else:
            yield key, value


def _plain(cfg: DictConfig) -> dict[str, Any]:
    """The config as Python values, interpolations resolved; a broken one is a one-line error."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        where = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None
    assert isinstance(plain, dict)
    return plain


def _check_targets(plain: dict[str, Any]) -> None:
    """Every network part names an importable class that takes the part's keywords."""
    network = plain.get("network")
    if not isinstance(network, dict):
        return
    for net_name, net in network.items():
        for part_name, part in (net or {}).items():
            key = f"network.{net_name}.{part_name}"
            if not isinstance(part, dict):
                continue
            if "_target_" not in part:
                raise ConfigError(f"{key} has no _target_ (the class to build it from)")
            target = import_target(f"{key}._target_", part["_target_"])
            takes = accepted_keywords(target)
            for name in part:
                if name != "_target_" and takes is not None and name not in takes:
                    hint = suggestion(name, sorted(takes - {"parent", "name"}))
                    raise ConfigError(
                        f"{key}.{name} is not an argument of {part['_target_']}{hint}"
                    )


def check_config(cfg: DictConfig, schema: Schema) -> None:
    """Checks every value of a composed config against `schema`, then its relations.

    Raises:
        ConfigError: one line naming the first key that is unknown, missing, of the wrong type,
            out of range, or in an impossible relation with another key.
    """
    plain = _plain(cfg)
    known = schema.known_keys()
    for key, value in _leaves(plain, "", schema):
        spec = schema.spec_for(key)
        if spec is None:
            raise ConfigError(f"unknown key {key}{suggest_key(key, known)}")
        spec.check(key, value)
    for name, section in schema.sections.items():
        if section.required:
            for key in section.keys:
                if OmegaConf.select(cfg, f"{name}.{key}", default=_MISSING) is _MISSING:
                    raise ConfigError(f"{name}.{key} must be set")
    _check_targets(plain)
    for relation in schema.relations:
        relation(cfg)


_MISSING = object()
