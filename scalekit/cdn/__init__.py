"""The CDN layer: caching headers for browsers and CDNs, surrogate keys, ETag and 304, assets.

Public helpers for app code: :func:`asset_url` (fingerprinted static asset URLs) and
:func:`check_preconditions` (If-Match / If-Unmodified-Since on unsafe methods).
"""

from __future__ import annotations

from .assets import AssetNotFoundError, asset_url
from .preconditions import check_preconditions

__all__ = ["AssetNotFoundError", "asset_url", "check_preconditions"]
