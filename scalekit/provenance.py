"""Where each setting came from: the source whose value is used, the sources it overrode,
and how a value may be printed (secrets hidden).

Read from the same layers :func:`scalekit.loader.build` merges, lowest precedence first, so
what is reported is what is used. ``wrap()`` logs the keys that two sources set to different
values (:func:`overridden`); ``scalekit check`` shows the source of every key (:func:`origins`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .conversion import dict_value_type, field_types, is_dataclass_type
from .errors import ConfigError
from .loader import Sources, convert, normalise
from .sources import KeyPath, Layer

__all__ = ["Origin", "Overridden", "display_value", "origins", "overridden", "overridden_of"]

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
        ignored = "; ".join(f"{source} = {display_value(self.key, value)}"
                            for source, value in self.ignored)
        source, value = self.used
        return (f"{self.key} is set by several sources; using {source} = "
                f"{display_value(self.key, value)}, ignoring {ignored}.")


@dataclass(frozen=True)
class Origin:
    """One key some source set: the source and value used, and the lower sources that set it."""

    key: str
    source: str
    value: Any  # converted to the key's type where it converts, else as given
    others: tuple[tuple[str, Any], ...] = ()  # (source, value), lower layers first

    @property
    def ignored(self) -> tuple[tuple[str, Any], ...]:
        """The lower sources whose value differs from the one used (they lost)."""
        return tuple(entry for entry in self.others if entry[1] != self.value)


def origins(root: type, layers: list[Layer]) -> dict[str, Origin]:
    """Every key that one of ``layers`` sets, by dotted key; the last layer setting it wins."""
    settings: dict[KeyPath, list[tuple[str, Any]]] = {}
    for values, source in layers:
        for path, raw in _leaves(root, normalise(root, values, (), source)):
            settings.setdefault(path, []).append((source, raw))
    found: dict[str, Origin] = {}
    for path, values_set in settings.items():
        converted = [(source, _convert_or_raw(raw, path, root)) for source, raw in values_set]
        key = ".".join(path)
        found[key] = Origin(key=key, source=converted[-1][0], value=converted[-1][1],
                            others=tuple(converted[:-1]))
    return found


def overridden(root: type, layers: list[Layer]) -> list[Overridden]:
    """Every key that more than one of ``layers`` sets, to values that differ once converted
    (``"false"`` from the environment and ``False`` from a file agree); the last layer wins."""
    return overridden_of(origins(root, layers))


def overridden_of(found: Mapping[str, Origin]) -> list[Overridden]:
    """The keys of ``found`` that a lower source set to another value than the one used."""
    return [Overridden(key=origin.key, used=(origin.source, origin.value), ignored=origin.ignored)
            for origin in found.values() if origin.ignored]


def _leaves(cls: type, values: Mapping[str, Any],
            path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    hints = field_types(cls)
    for key, value in values.items():
        target = hints.get(key)
        entry_type = dict_value_type(target)
        if is_dataclass_type(target) and isinstance(value, Mapping):
            yield from _leaves(target, value, (*path, key))
        elif is_dataclass_type(entry_type) and isinstance(value, Mapping):
            for name, entry in value.items():
                if isinstance(entry, Mapping):
                    yield from _leaves(entry_type, entry, (*path, key, str(name)))
        else:
            yield (*path, key), value


def _convert_or_raw(raw: Any, path: KeyPath, root: type) -> Any:
    target: Any = root
    for step in path:
        entry_type = dict_value_type(target)
        target = entry_type if entry_type is not None else field_types(target).get(step)
        if target is None:
            return raw
    try:
        return convert(raw, target, path, ".".join(path), Sources())
    except ConfigError:
        return raw  # an unusable value: building the config reports it if it is the one used
