"""Configuration of the CDN header-stamping layer."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CDNConfig"]


@dataclass(frozen=True, slots=True)
class CDNConfig:
    """Cache-Control / CDN-Cache-Control / Surrogate-Key stamping, ETag and 304."""

    enabled: bool = True
