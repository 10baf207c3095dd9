"""Fingerprinted static assets: build them, name them in templates, serve them in-app.

``scalekit assets build SRC DEST`` copies every file of SRC to DEST under a name carrying a
hash of its content (``css/app.css`` -> ``css/app.3f2a1b9c0d4e.css``), writes gzip and brotli
siblings where they are smaller (servestatic's compressor), and a ``manifest.json`` mapping
each logical name to its fingerprinted file and strong ETag. A changed file gets a new URL, so
every cache may keep each URL forever (``immutable-asset``).

``asset_url("css/app.css")`` looks the name up in the manifest and returns the URL under
``cdn.assets_prefix``, on ``cdn.assets_base_url`` when set. In-app serving is servestatic's job
(immutable headers for fingerprinted files, precompressed variants, Range, 304); nginx or the
CDN serves the same directory in deploy.

>>> index = AssetIndex({"app.css": ManifestEntry("app.0123456789ab.css", '"x"')}, prefix="/static/",
...                    base_url="https://cdn.example.com", root="/srv/static")
>>> index.url("app.css")
'https://cdn.example.com/static/app.0123456789ab.css'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xxhash import xxh3_128_hexdigest

from ..errors import ConfigError, ScalekitError
from .presets import ONE_YEAR_SECONDS

__all__ = [
    "MANIFEST_NAME",
    "AssetIndex",
    "AssetNotFoundError",
    "ManifestEntry",
    "asset_url",
    "build_assets",
    "load_index",
    "serve_assets_asgi",
    "serve_assets_wsgi",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# 12 hex digits, the form servestatic (and WhiteNoise, Django) recognise as fingerprinted.
HASH_LENGTH = 12


class AssetNotFoundError(ScalekitError, LookupError):
    """``asset_url`` was asked for a name the manifest does not list."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One asset: its fingerprinted path (relative to DEST) and the ETag of its bytes."""

    path: str
    etag: str


@dataclass(frozen=True, slots=True)
class AssetIndex:
    """A loaded manifest with the URL settings it is served under."""

    entries: dict[str, ManifestEntry]
    prefix: str
    base_url: str | None
    root: str | None  # the DEST directory holding the files; None when nothing is built

    def url(self, name: str) -> str:
        """The public URL of logical asset ``name``; unfingerprinted when no manifest is used."""
        logical = name.lstrip("/")
        if self.root is None:
            path = logical  # development without a build: the plain name
        else:
            entry = self.entries.get(logical)
            if entry is None:
                raise AssetNotFoundError(
                    f"asset {name!r} is not in the manifest {self.root}/{MANIFEST_NAME}; check the "
                    "name (relative to the SRC folder) or run `scalekit assets build SRC DEST` again.")
            path = entry.path
        base = (self.base_url or "").rstrip("/")
        return f"{base}{self.prefix}{path}"

    def fingerprinted_urls(self) -> frozenset[str]:
        """Every URL path (under the prefix) that names a fingerprinted file."""
        return frozenset(self.prefix + entry.path for entry in self.entries.values())


def fingerprinted_name(relative: str, digest: str) -> str:
    """``css/app.css`` -> ``css/app.<hash>.css`` (hash before the last extension)."""
    folder, _, filename = relative.rpartition("/")
    stem, dot, extension = filename.rpartition(".")
    named = f"{stem}.{digest}.{extension}" if dot and stem else f"{filename}.{digest}"
    return f"{folder}/{named}" if folder else named


def build_assets(source: str | os.PathLike[str], destination: str | os.PathLike[str], *,
                 compress: bool = True, log: Callable[[str], None] = lambda _: None) -> dict[str, ManifestEntry]:
    """Fingerprint every file under ``source`` into ``destination`` and write the manifest.

    Hidden files and folders are skipped. Builds are reproducible: the same bytes give the same
    names, and existing files in ``destination`` are left alone.
    """
    source_root, dest_root = Path(source), Path(destination)
    if not source_root.is_dir():
        raise ScalekitError(f"assets source {str(source_root)!r} is not a directory; pass the folder "
                            "holding your CSS, JS and images as SRC.")
    compressor = _compressor(log) if compress else None
    entries: dict[str, ManifestEntry] = {}
    for path in sorted(source_root.rglob("*")):
        relative = path.relative_to(source_root).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in relative.split("/")):
            continue
        data = path.read_bytes()
        digest = xxh3_128_hexdigest(data)
        target_name = fingerprinted_name(relative, digest[:HASH_LENGTH])
        target = dest_root / target_name
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(target, data)
        entries[relative] = ManifestEntry(target_name, f'"{digest}"')
        if compressor is not None and compressor.should_compress(target.name):
            compressor.compress(str(target))
        log(f"{relative} -> {target_name}")
    manifest = {"version": MANIFEST_VERSION,
                "files": {name: {"path": e.path, "etag": e.etag} for name, e in entries.items()}}
    dest_root.mkdir(parents=True, exist_ok=True)
    _write_atomically(dest_root / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return entries


def _compressor(log: Callable[[str], None]) -> Any:
    from ..extras import require_extras

    require_extras(["assets"], needed_for="precompressing assets (--no-compress skips it)")
    from servestatic.compress import Compressor  # type: ignore[import-untyped]  # assets extra

    # zstd would need Python 3.14's compression.zstd; gzip and brotli cover every browser.
    return Compressor(use_gzip=True, use_brotli=True, use_zstd=False, log=log, quiet=True)


def _write_atomically(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)


def load_index(manifest: str | None, *, prefix: str, base_url: str | None) -> AssetIndex:
    """The :class:`AssetIndex` for ``cdn.assets_manifest`` (None: unfingerprinted dev URLs)."""
    if manifest is None:
        return AssetIndex({}, prefix, base_url, None)
    path = Path(manifest)
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unknown manifest version {raw.get('version')!r}, expected {MANIFEST_VERSION}")
        entries = {name: ManifestEntry(item["path"], item["etag"]) for name, item in raw["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(key="cdn.assets_manifest", value=manifest,
                          expected=f"a manifest written by `scalekit assets build SRC DEST` ({exc})") from None
    return AssetIndex(entries, prefix, base_url, str(path.parent.resolve()))


def _servestatic_options(index: AssetIndex) -> dict[str, Any]:
    immutable = index.fingerprinted_urls()
    etags = {index.prefix + entry.path: entry.etag for entry in index.entries.values()}

    def is_immutable(_path: str, url: str) -> bool:
        return url in immutable

    def add_headers(headers: Any, _path: str, url: str) -> None:
        # The content hash, identical on every machine; servestatic's default derives the
        # ETag from the file's mtime, which differs between the instances of a fleet.
        etag = etags.get(url)
        if etag is not None:
            headers["ETag"] = etag

    return {"root": index.root, "prefix": index.prefix, "immutable_file_test": is_immutable,
            "add_headers_function": add_headers}


def serve_assets_wsgi(app: Any, index: AssetIndex) -> Any:
    """``app`` behind servestatic serving ``index``'s files under its prefix (WSGI)."""
    from servestatic import ServeStatic  # type: ignore[import-untyped]

    class Static(ServeStatic):  # type: ignore[misc]
        FOREVER = ONE_YEAR_SECONDS  # servestatic's default is ten years; one is the convention

    return Static(app, **_servestatic_options(index))


def serve_assets_asgi(app: Any, index: AssetIndex) -> Any:
    """``app`` behind servestatic serving ``index``'s files under its prefix (ASGI)."""
    from servestatic import ServeStaticASGI

    class Static(ServeStaticASGI):  # type: ignore[misc]
        FOREVER = ONE_YEAR_SECONDS

    return Static(app, **_servestatic_options(index))


_fallback: dict[tuple[str | None, str, str | None], AssetIndex] = {}


def asset_url(name: str) -> str:
    """The fingerprinted URL of static asset ``name`` (its path under the build's SRC).

    Uses the manifest of the newest wrapped app of this process that has one (apps of one
    process normally share it), or else the
    configuration found in the environment / scalekit.toml. ``asset_url("css/app.css")`` ->
    ``"https://cdn.example.com/static/css/app.3f2a1b9c0d4e.css"``.
    """
    from ..runtime import live_runtimes

    for runtime in reversed(live_runtimes()):
        index = runtime.services.get("cdn.assets")
        if index is not None:
            return index.url(name)  # type: ignore[no-any-return]
    from ..config import load_config

    cdn = load_config().cdn
    key = (cdn.assets_manifest, cdn.assets_prefix, cdn.assets_base_url)
    if key not in _fallback:
        _fallback[key] = load_index(cdn.assets_manifest, prefix=cdn.assets_prefix,
                                    base_url=cdn.assets_base_url)
    return _fallback[key].url(name)
