"""Generic layered loading of frozen config dataclasses (used by :mod:`scalekit.config`).

Sources are read into plain nested mappings ("layers", :mod:`scalekit.sources`), normalised,
merged (later layers win, key by key), then converted by the dataclass field types: ``bool``,
``int``, ``float``, ``str``, ``Optional``/unions, ``Literal``, ``tuple[X, ...]``,
``dict[str, X]`` and nested dataclasses (scalars in :mod:`scalekit.conversion`). Every value
remembers where it came from, so an error names the file, the variable or the argument to fix
(and :mod:`scalekit.provenance` reports it). Nothing here knows scalekit's sections: the root
class is a parameter.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Root:
...     port: int = 80
>>> build(Root, [({"port": "8080"}, "environment variable SCALEKIT_PORT")])
Root(port=8080)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from .conversion import (
    BOOL_WORDS,
    NONE_WORDS,
    Mismatch,
    as_list,
    as_table,
    convert_scalar,
    field_types,
    is_dataclass_type,
    parse_json,
)
from .errors import ConfigError, UnknownKeyError
from .sources import KeyPath, Layer, leaf_paths, read_environ, read_toml

__all__ = [
    "Layer",
    "Sources",
    "build",
    "convert",
    "field_types",
    "leaf_paths",
    "normalise",
    "read_environ",
    "read_toml",
]


class Sources:
    """Where each key path was last set; a key not set itself inherits its parent's source."""

    def __init__(self) -> None:
        self._by_path: dict[KeyPath, str] = {}

    def record(self, values: Mapping[str, Any], source: str, path: KeyPath = ()) -> None:
        """Note ``source`` for every key path of ``values`` (later records win)."""
        for key, value in values.items():
            self._by_path[(*path, key)] = source
            if isinstance(value, Mapping):
                self.record(value, source, (*path, key))

    def of(self, path: KeyPath) -> str:
        """The source that set ``path`` or its nearest section ("" if none did)."""
        while path:
            if path in self._by_path:
                return self._by_path[path]
            path = path[:-1]
        return ""


def build(root: type, layers: list[Layer]) -> Any:
    """Merge ``layers`` (lowest precedence first) and build ``root`` from them."""
    merged: dict[str, Any] = {}
    sources = Sources()
    for values, source in layers:
        normalised = normalise(root, values, (), source)
        sources.record(normalised, source)
        merged = _merge(merged, normalised)
    return _build(root, merged, (), sources)


def normalise(cls: type, values: Mapping[str, Any], path: KeyPath, source: str) -> dict[str, Any]:
    """Section shorthands to mappings: ``metrics=False``, a section object, a JSON object text."""
    if not isinstance(values, Mapping):
        raise ConfigError(key=".".join(path) or "configuration", value=values,
                          expected="a table of settings", source=source)
    hints = field_types(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        target = hints.get(key)
        if is_dataclass_type(target):
            value = _section_value(target, value, (*path, key), source)
            if isinstance(value, Mapping):
                value = normalise(target, value, (*path, key), source)
        out[key] = value
    return out


def _section_value(target: type, value: Any, path: KeyPath, source: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A section object is the whole section: its defaults override lower layers too.
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    text = value.strip().lower() if isinstance(value, str) else None
    if "enabled" in field_types(target) and (isinstance(value, bool) or text in BOOL_WORDS):
        return {"enabled": value if isinstance(value, bool) else BOOL_WORDS[text or ""]}
    if text is not None and text.startswith("{"):
        return parse_json(value, ".".join(path), source)
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _build(cls: type, values: Mapping[str, Any], path: KeyPath, sources: Sources,
           label: str = "") -> Any:
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        key_path, key_label = (*path, key), f"{label}{key}"
        if key not in hints:
            nearest = difflib.get_close_matches(str(key), list(hints), n=1, cutoff=0.6)
            raise UnknownKeyError(key=key_label, value=raw, expected=", ".join(sorted(hints)),
                                  source=sources.of(key_path),
                                  suggestion=f"{label}{nearest[0]}" if nearest else None)
        kwargs[key] = convert(raw, hints[key], key_path, key_label, sources)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        inner = tuple(exc.key.split(".")) if exc.key else ()
        source = sources.of((*path, *inner))
        raise (exc.under(label.rstrip("."), source=source) if label
               else _with_source(exc, source)) from None


def _with_source(exc: ConfigError, source: str) -> ConfigError:
    if exc.source or not source:
        return exc
    return type(exc)(exc.detail, key=exc.key, value=exc.value, expected=exc.expected,
                     suggestion=exc.suggestion, source=source)


def convert(raw: Any, target: Any, path: KeyPath, label: str, sources: Sources) -> Any:
    """``raw`` as type ``target``; a value that does not fit is a ConfigError naming ``label``
    and the source that set it."""
    origin, args = typing.get_origin(target), typing.get_args(target)
    if origin in (Union, types.UnionType) and type(None) in args:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in NONE_WORDS):
            return None
        options = tuple(a for a in args if a is not type(None))
        if len(options) == 1:  # X | None: convert as X (lists, tables and sections included)
            return convert(raw, options[0], path, label, sources)
    if is_dataclass_type(target):
        value = _section_value(target, raw, path, sources.of(path))
        if not isinstance(value, Mapping):
            switch = " or true/false to switch it" if "enabled" in field_types(target) else ""
            raise ConfigError(key=label, value=raw, expected=f"a table of settings{switch}",
                              source=sources.of(path))
        return _build(target, value, path, sources, f"{label}.")
    if origin is tuple:
        items = as_list(raw, label, sources.of(path))
        item_type = args[0] if args else Any
        return tuple(convert(item, item_type, (*path, str(i)), f"{label}[{i}]", sources)
                     for i, item in enumerate(items))
    if origin is dict:
        entries = as_table(raw, label, sources.of(path))
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, value_type, (*path, str(k)), f"{label}.{k}", sources)
                for k, v in entries.items()}
    try:
        return convert_scalar(raw, target)
    except Mismatch as exc:
        raise ConfigError(exc.hint, key=label, value=raw, expected=exc.expected,
                          source=sources.of(path)) from None
