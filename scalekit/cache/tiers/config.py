"""Configuration of the cache tiers (L1 memory, L2 Redis, L3 disk) and fleet invalidation."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DiskConfig", "InvalidationConfig", "L2Config", "MemoryConfig"]


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """L1: the in-process LRU bounded in bytes."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class L2Config:
    """L2: Redis shared by the fleet (used once ``redis.url`` is set)."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DiskConfig:
    """L3: local disk bounded in bytes, under ``state_dir``."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class InvalidationConfig:
    """Tag generations, the pub/sub channel, and the protected purge endpoint."""

    enabled: bool = True
