"""Declarative settings: a frozen dataclass per TOML table, validated field by field.

Each field carries its documentation, unit and allowed range in its metadata, so the
validator, the error messages and the README's configuration reference all come from
one place and cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import stat
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hashbay.agent.core.quoting import clip, quote
from hashbay.drivers.errors import ConfigError
from hashbay.drivers.numbers import finite

_META_KEY = "hashbay_setting"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a key that has none: the file must give it."""


@dataclass(frozen=True)
class Rule:
    """What one key accepts, and the words that describe it to an operator."""

    doc: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    min_items: int = 0
    max_items: int | None = None
    hex: bool = False  # shown as 0x.. in docs and errors (bus addresses)
    file: bool = False  # a path that must name a readable regular file (empty: none)

    def allowed(self, kind: type, *, with_unit: bool = True) -> str:
        """Describe the accepted values in a few words, for errors and docs."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if kind is bool:
            return "true or false"
        name = {int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
        unit = f" {self.unit}" if self.unit and with_unit else ""
        if self.min is not None and self.max is not None:
            if self.hex:
                return f"{name} from {int(self.min):#04x} to {int(self.max):#04x}{unit}"
            return f"{name} from {_fmt(self.min)} to {_fmt(self.max)}{unit}"
        if self.min is not None:
            return f"{name} of at least {_fmt(self.min)}{unit}"
        if self.max is not None:
            return f"{name} of at most {_fmt(self.max)}{unit}"
        if self.file:
            return "empty, or the absolute path of a readable file"
        if self.pattern is not None:
            return f"{name} matching `{self.pattern}`"
        return name


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def setting(
    default: Any,
    doc: str,
    *,
    unit: str = "",
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] = (),
    pattern: str | None = None,
    hex: bool = False,
) -> Any:
    """Declare a scalar key with its default and what it accepts."""
    rule = Rule(doc, unit, min, max, choices, pattern, hex=hex)
    return _field(default, rule)


def file_path(doc: str) -> Any:
    """Declare a key naming a file the agent reads (empty: none); it must exist and be
    readable when the config is checked, so a typo fails `--check-config`, not the start."""
    return _field("", Rule(doc, pattern=r"(/.*)?", file=True))


def _field(default: Any, rule: Rule) -> Any:
    if default is REQUIRED:
        return dataclasses.field(metadata={_META_KEY: rule})
    return dataclasses.field(default=default, metadata={_META_KEY: rule})


def table(factory: Any, doc: str) -> Any:
    """Declare a sub-table whose keys all have defaults."""
    return dataclasses.field(default_factory=factory, metadata={_META_KEY: Rule(doc)})


def array(doc: str, *, min_items: int = 0, max_items: int | None = None) -> Any:
    """Declare an array of tables (`[[name]]` in TOML)."""
    rule = Rule(doc, min_items=min_items, max_items=max_items)
    return dataclasses.field(default=(), metadata={_META_KEY: rule})


def scalars(
    default: Any,
    doc: str,
    *,
    unit: str = "",
    min: float | None = None,
    max: float | None = None,
    min_items: int = 0,
    max_items: int | None = None,
    hex: bool = False,
    pattern: str | None = None,
) -> Any:
    """Declare an array of scalars; the range (or pattern) applies to every item."""
    rule = Rule(
        doc, unit, min, max, pattern=pattern, min_items=min_items, max_items=max_items, hex=hex
    )
    return _field(default, rule)


def rule_of(field: dataclasses.Field[Any]) -> Rule:
    rule = field.metadata.get(_META_KEY)
    if not isinstance(rule, Rule):
        raise TypeError(f"field {field.name} was not declared with setting/table/array")
    return rule


@dataclass(frozen=True)
class FieldInfo:
    """A field of a settings class with its resolved type and rule."""

    name: str
    kind: Any
    rule: Rule
    default: Any


def fields_of(cls: type) -> Iterator[FieldInfo]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default: Any = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        elif default is dataclasses.MISSING:
            default = REQUIRED
        yield FieldInfo(field.name, hints[field.name], rule_of(field), default)


def array_item_type(kind: Any) -> type | None:
    """The table class of a `tuple[Table, ...]` annotation, else None."""
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
            return typing.cast(type, args[0])
    return None


def scalar_list_type(kind: Any) -> type | None:
    """The item type of a `tuple[int, ...]`-style annotation of scalars, else None."""
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
            return typing.cast(type, args[0])
    return None


def is_table(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


T = TypeVar("T")


def parse_table(cls: type[T], raw: Mapping[str, Any], where: str) -> T:
    """Build `cls` from a TOML table, or raise ConfigError naming the first bad key."""
    known = {info.name: info for info in fields_of(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(_unknown_key(where, key, list(known)))
    values: dict[str, Any] = {}
    for name, info in known.items():
        path = f"{where}.{name}" if where else name
        if name not in raw:
            if info.default is REQUIRED:
                raise ConfigError(f"{path}: missing; must be {info.rule.allowed(info.kind)}")
            if isinstance(info.default, tuple) and len(info.default) < info.rule.min_items:
                raise ConfigError(f"{path}: missing; {_count_needed(info.rule)} ([[{path}]])")
            continue
        values[name] = _parse_value(info, raw[name], path)
    return cls(**values)


def parse_field(cls: type, name: str, value: Any, path: str) -> Any:
    """One key of a settings table checked by its declaration, as in a file: for a value
    that comes from elsewhere (a pool list sent from afar), so it meets the same rules."""
    (info,) = (info for info in fields_of(cls) if info.name == name)
    return _parse_value(info, value, path)


def _unknown_key(where: str, key: str, known: list[str]) -> str:
    key = clip(key, 64)
    path = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
    return f"{path}: unknown key{hint}"


def _parse_value(info: FieldInfo, value: Any, path: str) -> Any:
    kind, rule = info.kind, info.rule
    item_type = array_item_type(kind)
    if item_type is not None:
        return _parse_array(item_type, rule, value, path)
    scalar_type = scalar_list_type(kind)
    if scalar_type is not None:
        return _parse_scalar_list(scalar_type, rule, value, path)
    if is_table(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a table, got {_describe(value)}")
        return parse_table(kind, value, path)
    return parse_scalar(kind, rule, value, path)


def _parse_array(item_type: type, rule: Rule, value: Any, path: str) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(
            f"{path}: must be an array of tables ([[{path}]]), got {_describe(value)}"
        )
    _check_count(rule, len(value), path)
    return tuple(parse_table(item_type, item, f"{path}[{i}]") for i, item in enumerate(value))


def _parse_scalar_list(item_type: type, rule: Rule, value: Any, path: str) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ConfigError(
            f"{path}: must be an array of {rule.allowed(item_type)}, got {_describe(value)}"
        )
    _check_count(rule, len(value), path)
    return tuple(parse_scalar(item_type, rule, v, f"{path}[{i}]") for i, v in enumerate(value))


def _check_count(rule: Rule, count: int, path: str) -> None:
    if count < rule.min_items or (rule.max_items is not None and count > rule.max_items):
        raise ConfigError(f"{path}: {_count_needed(rule)}, got {count}")


def _count_needed(rule: Rule) -> str:
    upper = "" if rule.max_items is None else f" and at most {rule.max_items}"
    return f"needs at least {rule.min_items}{upper} entries"


def parse_scalar(kind: Any, rule: Rule, value: Any, path: str) -> Any:
    """Check one scalar against its type and rule; ints are accepted where numbers are."""
    base = _scalar_base(kind)
    ok_type = (
        (base is bool and isinstance(value, bool))
        or (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (base is str and isinstance(value, str))
    )
    if not ok_type:
        raise ConfigError(f"{path}: must be {rule.allowed(base)}, got {_describe(value)}")
    if base in (int, float):
        number = finite(value)
        if number is None:  # NaN, an infinity, or an integer beyond any float
            raise ConfigError(
                f"{path}: must be {rule.allowed(base)} (finite), got {_describe(value)}"
            )
        if base is float:
            value = number
    in_range = not (
        (rule.min is not None and value < rule.min) or (rule.max is not None and value > rule.max)
    )
    matches = rule.pattern is None or re.fullmatch(rule.pattern, value) is not None
    chosen = not rule.choices or value in rule.choices
    if not (in_range and matches and chosen):
        raise ConfigError(f"{path}: must be {rule.allowed(base)}, got {quote(value)}")
    if rule.file and value:
        _check_readable(value, path)
    return value


def _check_readable(name: str, path: str) -> None:
    shown = clip(name, 100, keep_end=True)
    try:
        with open(name, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ConfigError(f"{path}: {shown} is not a regular file")
            file.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{path}: cannot read {shown}: {reason}") from None


def optional_scalar_type(kind: Any) -> type | None:
    """The scalar of an `int | None`-style annotation (an optional key, None when absent:
    a pin that is not wired), else None."""
    if isinstance(kind, types.UnionType):
        args = typing.get_args(kind)
        if len(args) == 2 and type(None) in args:
            (base,) = (a for a in args if a is not type(None))
            if base in (bool, int, float, str):
                return typing.cast(type, base)
    return None


def _scalar_base(kind: Any) -> type:
    if kind in (bool, int, float, str):
        return typing.cast(type, kind)
    optional = optional_scalar_type(kind)
    if optional is not None:
        return optional
    if typing.get_origin(kind) is typing.Literal or isinstance(kind, types.UnionType):
        raise TypeError(f"unsupported setting type {kind!r}; use str with choices")
    raise TypeError(f"unsupported setting type {kind!r}")


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds |= {list: "an array", dict: "a table"}
    return f"{kinds.get(type(value), type(value).__name__)} ({quote(value)})"
