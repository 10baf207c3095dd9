"""Start-up shared by the three shops: configuration, the database, the fingerprinted assets.

``prepare_shop(**overrides)`` loads scalekit's configuration the usual way (``overrides`` >
``SCALEKIT_*`` env > ``scalekit.toml`` > defaults), creates and seeds the products table on
first start (the default SQLite file under ``state_dir``, or ``SCALEKIT_POOL_DATABASES_DEFAULT_URL``
for Postgres), and builds the static assets into ``<state_dir>/assets`` with their manifest
unless ``cdn.assets_manifest`` already names one (a deploy runs ``scalekit assets build``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scalekit
from scalekit.cdn.assets import MANIFEST_NAME, AssetIndex, build_assets, load_index
from scalekit.pool.engines import engine_url

from .data import prepare_database

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "ShopSetup", "prepare_shop"]

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = str(HERE / "templates")
STATIC_DIR = str(HERE / "static")


@dataclass(frozen=True)
class ShopSetup:
    """What a shop's ``app.py`` needs: the config to wrap with, and where its data lives."""

    config: scalekit.Config
    database_url: str
    assets: AssetIndex

    def asset_url(self, name: str) -> str:
        """The fingerprinted URL of ``name`` (``css/shop.css``), for the templates.

        From this shop's own manifest: ``scalekit.cdn.assets.asset_url`` would do too, but it
        picks any wrapped app of the process, and the tests run several side by side.
        """
        return self.assets.url(name)

    @property
    def settings(self) -> dict[str, Any]:
        """Keyword arguments for ``scalekit.wrap`` / ``ScaleKit(app, ...)`` / ``SCALEKIT``."""
        return {"config": self.config}


def prepare_shop(**overrides: Any) -> ShopSetup:
    """Load the config, create and seed the database, build the assets (all idempotent)."""
    config = scalekit.load_config(overrides)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    if config.cdn.assets_manifest is None:
        assets = Path(config.state_dir) / "assets"
        build_assets(STATIC_DIR, assets)  # reproducible: unchanged files keep their names
        config = dataclasses.replace(
            config, cdn=dataclasses.replace(config.cdn, assets_manifest=str(assets / MANIFEST_NAME)))
    url = engine_url(config.pool.databases["default"], config.state_dir)
    database_url = url.render_as_string(hide_password=False)
    prepare_database(database_url)
    cdn = config.cdn
    assets = load_index(cdn.assets_manifest, prefix=cdn.assets_prefix, base_url=cdn.assets_base_url)
    return ShopSetup(config, database_url, assets)
