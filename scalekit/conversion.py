"""Raw setting values to their declared types: scalars, unions of them and ``Literal`` values,
lists and tables (also as text from the environment), and the field types of config dataclasses.

Pure and source-agnostic: a value that does not fit raises :class:`Mismatch` saying what is
accepted; :mod:`scalekit.loader` turns it into a :class:`~scalekit.errors.ConfigError` naming
the key and where it was set.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeGuard, Union

from .errors import ConfigError

__all__ = [
    "BOOL_WORDS",
    "NONE_WORDS",
    "Mismatch",
    "as_list",
    "as_table",
    "convert_scalar",
    "dict_value_type",
    "field_types",
    "is_dataclass_type",
    "parse_json",
]

BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}
NONE_WORDS = frozenset({"", "none", "null"})


class Mismatch(Exception):
    """A value does not fit its type: what is accepted, and maybe the nearest accepted value."""

    def __init__(self, expected: str, hint: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.hint = hint


def convert_scalar(raw: Any, target: Any) -> Any:
    """``raw`` as a ``bool``, ``int``, ``float``, ``str``, ``Literal`` or union of them;
    any other type takes ``raw`` as it is."""
    origin, args = typing.get_origin(target), typing.get_args(target)
    if origin in (Union, types.UnionType):  # of scalars: the first option that fits
        expected: list[str] = []
        for option in args:
            if option is type(None):
                if raw is None:
                    return None
                expected.append("none")
                continue
            try:
                return convert_scalar(raw, option)
            except Mismatch as exc:
                expected.append(exc.expected)
        raise Mismatch(" or ".join(expected))
    if origin is Literal:
        for option in args:  # the environment gives text, so "3" also matches Literal[3]
            if (raw == option and type(raw) is type(option)) or (
                    isinstance(raw, str) and raw.strip() == str(option)):
                return option
        nearest = difflib.get_close_matches(str(raw), [str(a) for a in args], n=1, cutoff=0.5)
        raise Mismatch("one of " + ", ".join(repr(a) for a in args),
                       f"Did you mean {nearest[0]!r}?" if nearest else "")
    converter = _SCALARS.get(target)
    return raw if converter is None else converter(raw)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[raw.strip().lower()]
    raise Mismatch("true or false (also 1/0, yes/no, on/off)")


def _to_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            pass  # reported below, with what is accepted
    raise Mismatch("an integer")


def _to_float(raw: Any) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip().replace("_", ""))
        except ValueError:
            pass
    raise Mismatch("a number")


def _to_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise Mismatch("a string")


_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def as_list(raw: Any, label: str, source: str) -> list[Any] | tuple[Any, ...]:
    """A list setting: a list, or text from the environment (``"a, b"`` or a JSON array)."""
    if isinstance(raw, str):
        text = raw.strip()
        raw = parse_json(text, label, source) if text.startswith("[") else [
            part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(key=label, value=raw, expected="a list", source=source)
    return raw


def as_table(raw: Any, label: str, source: str) -> Mapping[str, Any]:
    """A table setting: a mapping, or a JSON object as text."""
    if isinstance(raw, str) and raw.strip().startswith("{"):
        raw = parse_json(raw, label, source)
    if not isinstance(raw, Mapping):
        raise ConfigError(key=label, value=raw, expected="a table", source=source)
    return raw


def parse_json(text: str, label: str, source: str) -> Any:
    """JSON text given for ``label``; invalid JSON is a config error naming the key."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(key=label, value=text, expected=f"valid JSON ({exc.msg})",
                          source=source) from None


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each init field of dataclass ``cls`` (cached)."""
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        resolved = typing.get_type_hints(cls)
        hints = {f.name: resolved[f.name] for f in dataclasses.fields(cls) if f.init}
        _HINTS_CACHE[cls] = hints
    return hints


def is_dataclass_type(target: Any) -> TypeGuard[type]:
    """True for a dataclass (a config section), not an instance of one."""
    return isinstance(target, type) and dataclasses.is_dataclass(target)


def dict_value_type(target: Any) -> Any:
    """``X`` for ``dict[str, X]`` (named sections, tables), else None."""
    if typing.get_origin(target) is dict:
        args = typing.get_args(target)
        return args[1] if len(args) == 2 else None
    return None
