"""Configuration of the response cache layer."""

from __future__ import annotations

from dataclasses import dataclass, field

from .tiers.config import DiskConfig, InvalidationConfig, L2Config, MemoryConfig

__all__ = ["CacheConfig"]


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The response cache: HTTP semantics (this section) and its tiers (nested sections)."""

    enabled: bool = True
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    l2: L2Config = field(default_factory=L2Config)
    disk: DiskConfig = field(default_factory=DiskConfig)
    invalidation: InvalidationConfig = field(default_factory=InvalidationConfig)
