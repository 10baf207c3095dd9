"""``@record``: an immutable value type for the request path, frozen for the type checker only.

A ``@dataclass(frozen=True)`` assigns every field through ``object.__setattr__`` in its
``__init__``, about 0.1 µs per field: 2 µs for a cache entry, paid several times on every
cache miss. ``@record`` builds a plain slotted dataclass at run time and declares it frozen
to type checkers (PEP 681 ``frozen_default``), so mypy still rejects any assignment to a field.

Calling a class with keywords costs more again: CPython packs them in a dict for the type's
call and unpacks it for ``__init__``. Built with its 17 fields by keyword, a cache entry took
12,200 instructions against 4,000 by position (callgrind, CPython 3.11), three times a miss.
So the records built on every miss (``CachedEntry``, ``StorePlan``, ``Forward``) are plain
``@record``s, built by position where the miss builds them, and
``tests/cache/test_positional_records.py`` reads each field back by name there (a swap of two
fields of one type would type-check). Everywhere else they are built by keyword, and
:func:`keyword_record` makes that the only way for records no hot path builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

__all__ = ["keyword_record", "record"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """A slotted dataclass with value equality, immutable by contract (checked by mypy)."""
    return dataclass(slots=True)(cls)


@dataclass_transform(frozen_default=True, kw_only_default=True)
def keyword_record(cls: type[T]) -> type[T]:
    """A :func:`record` built by keyword only: for records with many fields, several of one
    type, where a positional swap would still type-check."""
    return dataclass(slots=True, kw_only=True)(cls)
