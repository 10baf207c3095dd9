"""The Jinja2 environment of the shop's templates (shared with the Flask and FastAPI shops)."""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from jinja2 import Environment

from scalekit.cdn.assets import AssetIndex, load_index


def environment(**options: Any) -> Environment:
    env = Environment(**options)
    env.globals.update(asset_url=asset_url, framework="Django")
    return env


def asset_url(name: str) -> str:
    """The fingerprinted URL of ``name``, from the manifest ``settings.SCALEKIT`` names."""
    cdn = settings.SCALEKIT["config"].cdn
    return _index(cdn.assets_manifest, cdn.assets_prefix, cdn.assets_base_url).url(name)


@functools.lru_cache(maxsize=8)
def _index(manifest: str | None, prefix: str, base_url: str | None) -> AssetIndex:
    return load_index(manifest, prefix=prefix, base_url=base_url)
