"""Configuration of the per-request database connection pool."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolConfig"]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Named databases, each a SQLAlchemy QueuePool lent lazily to each request."""

    enabled: bool = True
