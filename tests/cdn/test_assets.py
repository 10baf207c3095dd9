"""Fingerprinted assets: the build, the manifest, asset_url, and in-app serving by servestatic."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import brotli
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from werkzeug.test import Client

import scalekit
from scalekit.cdn import AssetNotFoundError, asset_url
from scalekit.cdn.assets import build_assets, fingerprinted_name, load_index
from scalekit.cdn.commands import COMMANDS, check
from scalekit.cdn.etag import body_etag
from scalekit.config import load_config
from scalekit.errors import ConfigError

CSS = b"body { color: #333; }\n" * 200
JS = b"console.log('scalekit');\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def built(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    (source / "css").mkdir(parents=True)
    (source / "css" / "app.css").write_bytes(CSS)
    (source / "app.js").write_bytes(JS)
    (source / "logo.png").write_bytes(PNG)
    (source / ".hidden").write_bytes(b"secret")
    result = CliRunner().invoke(COMMANDS[0], ["build", str(source), str(tmp_path / "dist"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / "dist"


def test_build_fingerprints_precompresses_and_writes_the_manifest(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["version"] == 1 and sorted(manifest["files"]) == ["app.js", "css/app.css", "logo.png"]
    entry = manifest["files"]["css/app.css"]
    assert entry["etag"] == body_etag(CSS)
    css = built / entry["path"]
    assert css.name == f"app.{body_etag(CSS)[1:13]}.css" and css.read_bytes() == CSS
    assert gzip.decompress((built / (entry["path"] + ".gz")).read_bytes()) == CSS
    assert brotli.decompress((built / (entry["path"] + ".br")).read_bytes()) == CSS
    png = manifest["files"]["logo.png"]["path"]
    assert not (built / (png + ".gz")).exists()  # already compressed formats are skipped
    assert not list(built.rglob(".hidden*"))


def test_build_is_reproducible(built: Path, tmp_path: Path) -> None:
    again = build_assets(tmp_path / "src", tmp_path / "again", compress=False)
    first = json.loads((built / "manifest.json").read_text())["files"]
    assert {name: entry.path for name, entry in again.items()} == {n: e["path"] for n, e in first.items()}


@pytest.mark.parametrize("name, expected", [
    ("app.css", "app.0123456789ab.css"), ("css/site.min.js", "css/site.min.0123456789ab.js"),
    ("LICENSE", "LICENSE.0123456789ab"), (".env", ".env.0123456789ab"),
])
def test_fingerprinted_names(name: str, expected: str) -> None:
    assert fingerprinted_name(name, "0123456789ab") == expected


def test_asset_url_uses_the_manifest_and_the_cdn_base_url(built: Path) -> None:
    index = load_index(str(built / "manifest.json"), prefix="/static/", base_url="https://cdn.example.com/")
    css_path = json.loads((built / "manifest.json").read_text())["files"]["css/app.css"]["path"]
    assert index.url("css/app.css") == f"https://cdn.example.com/static/{css_path}"
    assert index.url("/css/app.css") == index.url("css/app.css")
    with pytest.raises(AssetNotFoundError, match="scalekit assets build"):
        index.url("css/missing.css")
    assert load_index(None, prefix="/s/", base_url=None).url("a.css") == "/s/a.css"  # dev: no build


def test_scalekit_asset_url_reads_the_wrapped_apps_manifest(built: Path) -> None:
    wrapped = scalekit.wrap(lambda environ, start_response: [], kind="wsgi", metrics=False, cache=False,
                            pool=False, cdn={"assets_manifest": str(built / "manifest.json"),
                                             "assets_base_url": "https://cdn.example.com"})
    try:
        assert asset_url("app.js").startswith("https://cdn.example.com/static/app.")
    finally:
        wrapped.runtime.close()


def test_a_missing_manifest_fails_at_start_up_naming_the_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scalekit assets build"):
        scalekit.wrap(lambda environ, start_response: [], kind="wsgi", metrics=False, cache=False,
                      pool=False, cdn={"assets_manifest": str(tmp_path / "nope.json")})


def test_check_reports_the_manifest(built: Path, tmp_path: Path) -> None:
    good = load_config({"cdn": {"assets_manifest": str(built / "manifest.json")}}, environ={}, cwd=tmp_path)
    assert check(good) == [("cdn assets manifest", True, f"3 assets in {built / 'manifest.json'}")]
    bad = load_config({"cdn": {"assets_manifest": str(tmp_path / "x.json")}}, environ={}, cwd=tmp_path)
    assert check(bad)[0][1] is False


def _app_404(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


async def _asgi_404(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"not found"})


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_in_app_serving_is_immutable_compressed_and_conditional(built: Path, kind: str) -> None:
    manifest = json.loads((built / "manifest.json").read_text())["files"]
    css = "/static/" + manifest["css/app.css"]["path"]
    settings = {"assets_manifest": str(built / "manifest.json"),
                "rules": [{"path": "/static/**", "policy": "immutable-asset"}]}
    app: Any = _app_404 if kind == "wsgi" else _asgi_404
    wrapped = scalekit.wrap(app, kind=kind, metrics=False, cache=False, pool=False, cdn=settings)
    client: Any = Client(wrapped) if kind == "wsgi" else TestClient(wrapped)
    response = client.get(css, headers={"Accept-Encoding": "br, gzip"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "max-age=31536000, public, immutable"
    assert response.headers["Content-Encoding"] == "br" and "Accept-Encoding" in response.headers["Vary"]
    assert response.headers["ETag"] == manifest["css/app.css"]["etag"]  # the same on every instance
    raw = response.data if kind == "wsgi" else response.content
    response.close()  # werkzeug's client leaves closing the file to the caller
    assert raw == CSS or brotli.decompress(raw) == CSS
    again = client.get(css, headers={"If-None-Match": response.headers["ETag"], "Accept-Encoding": "br"})
    assert again.status_code == 304
    # The original name is not served (only fingerprinted files are immutable), the app answers.
    missing = client.get("/static/css/app.css")
    assert missing.status_code == 404
    again.close()
    missing.close()
