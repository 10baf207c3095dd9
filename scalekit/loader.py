"""Generic layered loading of frozen config dataclasses (used by :mod:`scalekit.config`).

Sources are read into plain nested mappings ("layers"), normalised, merged (later layers win,
key by key), then converted by the dataclass field types: ``bool``, ``int``, ``float``, ``str``,
``Optional``/unions, ``Literal``, ``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses.
Every value remembers where it came from, so an error names the file, the variable or the
argument to fix. Nothing here knows scalekit's sections: the root class is a parameter.

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
import json
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard, Union

from .errors import ConfigError, UnknownKeyError

__all__ = [
    "Layer",
    "Overridden",
    "build",
    "display_value",
    "field_types",
    "leaf_paths",
    "overridden",
    "read_environ",
    "read_toml",
]

Layer = tuple[Mapping[str, Any], str]  # values, and where they came from
KeyPath = tuple[str, ...]

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}
_NONE_WORDS = frozenset({"", "none", "null"})


# --------------------------------------------------------------------------- sources


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a toml file; for ``pyproject.toml`` only its ``[tool.scalekit]`` table."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file, or point "
                          "SCALEKIT_CONFIG at another one.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}. Check the "
                          "path given in SCALEKIT_CONFIG or config_file.") from None
    if path.name != "pyproject.toml":
        return data
    section = data.get("tool", {}).get("scalekit", {})
    if not isinstance(section, dict):
        raise ConfigError(key="tool.scalekit", value=section, expected="a table of settings",
                          source=str(path))
    return section


def read_environ(root: type, environ: Mapping[str, str], prefix: str,
                 ignore: frozenset[str] = frozenset()) -> list[Layer]:
    """One layer per ``PREFIX_*`` variable; a variable that names no key is an error.

    Names are the dotted key upper-cased with ``_`` for ``.``; field names may contain ``_``
    (``SCALEKIT_CACHE_MEMORY_MAX_BYTES``), and a ``dict[str, Section]`` field takes the entry
    name in the middle (``SCALEKIT_POOL_DATABASES_REPLICA_URL``; entry names are lower-cased).
    """
    layers: list[Layer] = []
    for name in sorted(environ):
        if not name.startswith(prefix) or name in ignore:
            continue
        path = _resolve_env_path(root, name[len(prefix):].lower().split("_"))
        if path is None:
            # Compare without the prefix, which every name shares and would make all look close.
            candidates = ["_".join(p).upper() for p in leaf_paths(root, sections=True)]
            nearest = [prefix + match for match in difflib.get_close_matches(
                name[len(prefix):], candidates, n=1, cutoff=0.6)]
            raise UnknownKeyError(
                f"unknown environment variable {name}: it names no setting. Each {prefix}* "
                f"variable is a dotted key in upper case with '_' for '.', e.g. "
                f"{prefix}CACHE_MEMORY_ENABLED=false for cache.memory.enabled; fix or unset it.",
                key=name, source="the environment", suggestion=nearest[0] if nearest else None)
        values: dict[str, Any] = {}
        node = values
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = environ[name]
        layers.append((values, f"environment variable {name}"))
    return layers


def _resolve_env_path(cls: type, parts: list[str]) -> list[str] | None:
    hints = field_types(cls)
    for end in range(len(parts), 0, -1):  # longest field name first
        name = "_".join(parts[:end])
        if name not in hints:
            continue
        rest, target = parts[end:], hints[name]
        if not rest:
            return [name]
        if _is_dataclass_type(target):
            sub = _resolve_env_path(target, rest)
            if sub is not None:
                return [name, *sub]
        entry_type = _dict_value_type(target)
        if _is_dataclass_type(entry_type):
            for split in range(len(rest) - 1, 0, -1):  # entry name, then a key of the entry
                sub = _resolve_env_path(entry_type, rest[split:])
                if sub is not None:
                    return [name, "_".join(rest[:split]), *sub]
    return None


def leaf_paths(cls: type, prefix: KeyPath = (), *, sections: bool = False) -> Iterator[KeyPath]:
    """Every settable key path of ``cls`` (nested sections expanded; ``sections`` adds them too)."""
    for name, target in field_types(cls).items():
        if _is_dataclass_type(target):
            if sections:
                yield (*prefix, name)
            yield from leaf_paths(target, (*prefix, name), sections=sections)
        else:
            yield (*prefix, name)


# --------------------------------------------------------------------------- merging


class _Sources:
    """Where each key path was last set; a key not set itself inherits its parent's source."""

    def __init__(self) -> None:
        self._by_path: dict[KeyPath, str] = {}

    def record(self, values: Mapping[str, Any], source: str, path: KeyPath = ()) -> None:
        for key, value in values.items():
            self._by_path[(*path, key)] = source
            if isinstance(value, Mapping):
                self.record(value, source, (*path, key))

    def of(self, path: KeyPath) -> str:
        while path:
            if path in self._by_path:
                return self._by_path[path]
            path = path[:-1]
        return ""


def build(root: type, layers: list[Layer]) -> Any:
    """Merge ``layers`` (lowest precedence first) and build ``root`` from them."""
    merged: dict[str, Any] = {}
    sources = _Sources()
    for values, source in layers:
        normalised = _normalise(root, values, (), source)
        sources.record(normalised, source)
        merged = _merge(merged, normalised)
    return _build(root, merged, (), sources)


def _normalise(cls: type, values: Mapping[str, Any], path: KeyPath, source: str) -> dict[str, Any]:
    """Section shorthands to mappings: ``metrics=False``, a section object, a JSON object text."""
    if not isinstance(values, Mapping):
        raise ConfigError(key=".".join(path) or "configuration", value=values,
                          expected="a table of settings", source=source)
    hints = field_types(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        target = hints.get(key)
        if _is_dataclass_type(target):
            value = _section_value(target, value, (*path, key), source)
            if isinstance(value, Mapping):
                value = _normalise(target, value, (*path, key), source)
        out[key] = value
    return out


def _section_value(target: type, value: Any, path: KeyPath, source: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A section object is the whole section: its defaults override lower layers too.
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    text = value.strip().lower() if isinstance(value, str) else None
    if "enabled" in field_types(target) and (isinstance(value, bool) or text in _BOOL_WORDS):
        return {"enabled": value if isinstance(value, bool) else _BOOL_WORDS[text or ""]}
    if text is not None and text.startswith("{"):
        return _json(value, ".".join(path), source)
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- disagreements

_SECRET_KEY = re.compile(r"token|secret|password", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


def display_value(key: str, value: Any) -> str:
    """``value`` as it may be printed: secrets (keys naming a token, secret or password) as
    ``<set>``/``<unset>``, and the password of a URL as ``***``."""
    if _SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return "<set>" if value else "<unset>"
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\1***@", value)
    return repr(value)


@dataclass(frozen=True)
class Overridden:
    """A key that several sources set to different values: the one used, and those ignored."""

    key: str
    used: tuple[str, Any]  # (source, value)
    ignored: tuple[tuple[str, Any], ...]  # lower layers first

    def message(self) -> str:
        """One line for the start-up log, secrets hidden."""
        ignored = "; ".join(f"{source} = {display_value(self.key, value)}" for source, value in self.ignored)
        source, value = self.used
        return (f"{self.key} is set by several sources; using {source} = "
                f"{display_value(self.key, value)}, ignoring {ignored}.")


def overridden(root: type, layers: list[Layer]) -> list[Overridden]:
    """Every key that more than one of ``layers`` sets, to values that differ once converted
    (``"false"`` from the environment and ``False`` from a file agree); the last layer wins."""
    settings: dict[KeyPath, list[tuple[str, Any]]] = {}
    for values, source in layers:
        for path, raw in _leaves(root, _normalise(root, values, (), source)):
            settings.setdefault(path, []).append((source, raw))
    found: list[Overridden] = []
    for path, values_set in settings.items():
        if len(values_set) < 2:
            continue
        converted = [(source, _convert_or_raw(raw, path, root)) for source, raw in values_set]
        used = converted[-1]
        ignored = tuple(entry for entry in converted[:-1] if entry[1] != used[1])
        if ignored:
            found.append(Overridden(key=".".join(path), used=used, ignored=ignored))
    return found


def _leaves(cls: type, values: Mapping[str, Any], path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    hints = field_types(cls)
    for key, value in values.items():
        target = hints.get(key)
        entry_type = _dict_value_type(target)
        if _is_dataclass_type(target) and isinstance(value, Mapping):
            yield from _leaves(target, value, (*path, key))
        elif _is_dataclass_type(entry_type) and isinstance(value, Mapping):
            for name, entry in value.items():
                if isinstance(entry, Mapping):
                    yield from _leaves(entry_type, entry, (*path, key, str(name)))
        else:
            yield (*path, key), value


def _convert_or_raw(raw: Any, path: KeyPath, root: type) -> Any:
    target: Any = root
    for step in path:
        entry_type = _dict_value_type(target)
        target = entry_type if entry_type is not None else field_types(target).get(step)
        if target is None:
            return raw
    try:
        return _convert(raw, target, path, ".".join(path), _Sources())
    except ConfigError:
        return raw  # an unusable value: building the config reports it if it is the one used


# --------------------------------------------------------------------------- conversion


def _build(cls: type, values: Mapping[str, Any], path: KeyPath, sources: _Sources,
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
        kwargs[key] = _convert(raw, hints[key], key_path, key_label, sources)
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


def _convert(raw: Any, target: Any, path: KeyPath, label: str, sources: _Sources) -> Any:
    origin, args = typing.get_origin(target), typing.get_args(target)
    if origin in (Union, types.UnionType) and type(None) in args:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in _NONE_WORDS):
            return None
        options = tuple(a for a in args if a is not type(None))
        if len(options) == 1:  # X | None: convert as X (lists, tables and sections included)
            return _convert(raw, options[0], path, label, sources)
    if _is_dataclass_type(target):
        value = _section_value(target, raw, path, sources.of(path))
        if not isinstance(value, Mapping):
            switch = " or true/false to switch it" if "enabled" in field_types(target) else ""
            raise ConfigError(key=label, value=raw, expected=f"a table of settings{switch}",
                              source=sources.of(path))
        return _build(target, value, path, sources, f"{label}.")
    if origin is tuple:
        items = _as_list(raw, label, sources.of(path))
        item_type = args[0] if args else Any
        return tuple(_convert(item, item_type, (*path, str(i)), f"{label}[{i}]", sources)
                     for i, item in enumerate(items))
    if origin is dict:
        entries = _as_table(raw, label, sources.of(path))
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, value_type, (*path, str(k)), f"{label}.{k}", sources)
                for k, v in entries.items()}
    try:
        return _convert_scalar(raw, target)
    except _Mismatch as exc:
        raise ConfigError(exc.hint, key=label, value=raw, expected=exc.expected,
                          source=sources.of(path)) from None


class _Mismatch(Exception):
    """A value does not fit its type: what is accepted, and maybe the nearest accepted value."""

    def __init__(self, expected: str, hint: str = "") -> None:
        super().__init__(expected)
        self.expected = expected
        self.hint = hint


def _convert_scalar(raw: Any, target: Any) -> Any:
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
                return _convert_scalar(raw, option)
            except _Mismatch as exc:
                expected.append(exc.expected)
        raise _Mismatch(" or ".join(expected))
    if origin is Literal:
        for option in args:  # the environment gives text, so "3" also matches Literal[3]
            if (raw == option and type(raw) is type(option)) or (
                    isinstance(raw, str) and raw.strip() == str(option)):
                return option
        nearest = difflib.get_close_matches(str(raw), [str(a) for a in args], n=1, cutoff=0.5)
        raise _Mismatch("one of " + ", ".join(repr(a) for a in args),
                        f"Did you mean {nearest[0]!r}?" if nearest else "")
    converter = _SCALARS.get(target)
    return raw if converter is None else converter(raw)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[raw.strip().lower()]
    raise _Mismatch("true or false (also 1/0, yes/no, on/off)")


def _to_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            pass  # reported below, with what is accepted
    raise _Mismatch("an integer")


def _to_float(raw: Any) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip().replace("_", ""))
        except ValueError:
            pass
    raise _Mismatch("a number")


def _to_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise _Mismatch("a string")


_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _as_list(raw: Any, label: str, source: str) -> list[Any] | tuple[Any, ...]:
    if isinstance(raw, str):  # environment: "a, b" or a JSON array
        text = raw.strip()
        raw = _json(text, label, source) if text.startswith("[") else [
            part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(key=label, value=raw, expected="a list", source=source)
    return raw


def _as_table(raw: Any, label: str, source: str) -> Mapping[str, Any]:
    if isinstance(raw, str) and raw.strip().startswith("{"):
        raw = _json(raw, label, source)
    if not isinstance(raw, Mapping):
        raise ConfigError(key=label, value=raw, expected="a table", source=source)
    return raw


def _json(text: str, label: str, source: str) -> Any:
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


def _is_dataclass_type(target: Any) -> TypeGuard[type]:
    return isinstance(target, type) and dataclasses.is_dataclass(target)


def _dict_value_type(target: Any) -> Any:
    if typing.get_origin(target) is dict:
        args = typing.get_args(target)
        return args[1] if len(args) == 2 else None
    return None
