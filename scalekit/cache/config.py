"""Configuration of the response cache layer."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CacheConfig"]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The response cache: semantics (part 1) and tiers (part 2)."""

    enabled: bool = True
