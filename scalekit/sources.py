"""Where settings are read from, as layers of plain nested mappings: a toml file (or
``[tool.scalekit]`` in ``pyproject.toml``) and ``PREFIX_*`` environment variables.

Each layer carries a label naming its source (the file, the variable), which errors, the
start-up log and ``scalekit check`` print. :mod:`scalekit.loader` merges and converts them.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .conversion import dict_value_type, field_types, is_dataclass_type
from .errors import ConfigError, UnknownKeyError

__all__ = ["KeyPath", "Layer", "leaf_paths", "read_environ", "read_toml"]

Layer = tuple[Mapping[str, Any], str]  # values, and where they came from
KeyPath = tuple[str, ...]


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
        if is_dataclass_type(target):
            sub = _resolve_env_path(target, rest)
            if sub is not None:
                return [name, *sub]
        entry_type = dict_value_type(target)
        if is_dataclass_type(entry_type):
            for split in range(len(rest) - 1, 0, -1):  # entry name, then a key of the entry
                sub = _resolve_env_path(entry_type, rest[split:])
                if sub is not None:
                    return [name, "_".join(rest[:split]), *sub]
    return None


def leaf_paths(cls: type, prefix: KeyPath = (), *, sections: bool = False) -> Iterator[KeyPath]:
    """Every settable key path of ``cls`` (nested sections expanded; ``sections`` adds them too)."""
    for name, target in field_types(cls).items():
        if is_dataclass_type(target):
            if sections:
                yield (*prefix, name)
            yield from leaf_paths(target, (*prefix, name), sections=sections)
        else:
            yield (*prefix, name)
