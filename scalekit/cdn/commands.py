"""``scalekit assets ...``: the CDN layer's command-line tools (loaded by scalekit.cli).

    scalekit assets build static/ build/static/     # fingerprint, precompress, write manifest
    scalekit assets url css/app.css                 # the URL a template would get
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, MissingExtraError
from .assets import MANIFEST_NAME, build_assets, load_index
from .purge.commands import check as purge_check
from .purge.commands import purge_group

__all__ = ["COMMANDS", "check"]


@click.group(name="assets")
def assets_group() -> None:
    """Fingerprinted static assets for CDNs (content hash in the file name)."""


@assets_group.command(name="build")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-compress", is_flag=True, help="Skip the .gz and .br precompressed siblings.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary line.")
def build_command(source: Path, destination: Path, no_compress: bool, quiet: bool) -> None:
    """Copy SOURCE into DESTINATION with content hashes in the names and write manifest.json.

    Point cdn.assets_manifest at DESTINATION/manifest.json and serve DESTINATION under
    cdn.assets_prefix (in-app through servestatic, or from nginx / the CDN).
    """
    try:
        entries = build_assets(source, destination, compress=not no_compress,
                               log=(lambda _: None) if quiet else click.echo)
    except MissingExtraError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(entries)} assets fingerprinted into {destination}; manifest: "
               f"{destination / MANIFEST_NAME}")


@assets_group.command(name="url")
@click.argument("name")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="manifest.json to read (default: cdn.assets_manifest from the config).")
def url_command(name: str, manifest: str | None) -> None:
    """Print the URL asset_url(NAME) returns."""
    from ..config import load_config

    cdn = load_config().cdn
    index = load_index(manifest or cdn.assets_manifest, prefix=cdn.assets_prefix,
                       base_url=cdn.assets_base_url)
    click.echo(index.url(name))


def check(config: Any) -> list[tuple[str, bool, str]]:
    """``scalekit check``: is the configured assets manifest readable? Do edge purges reach?"""
    return _check_manifest(config) + purge_check(config)


def _check_manifest(config: Any) -> list[tuple[str, bool, str]]:
    manifest = config.cdn.assets_manifest
    if manifest is None:
        return []
    try:
        index = load_index(manifest, prefix=config.cdn.assets_prefix, base_url=config.cdn.assets_base_url)
    except ConfigError as exc:  # load_index reports every unreadable manifest as one
        return [("cdn assets manifest", False, str(exc))]
    return [("cdn assets manifest", True, f"{len(index.entries)} assets in {manifest}")]


COMMANDS: list[click.Command] = [assets_group, purge_group]
