"""Fastly, Cloudflare and Akamai purges, each checked call by call against the vendor's
documented API by a local server (tests/edge/doubles.py names the documentation each follows):
method, path, authentication, body, per-call limits. Every purge goes through the real path:
scalekit.invalidate / an unsafe method -> the Redis stream -> a consumer -> the vendor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalekit.cdn.purge.edgegrid import ALGORITHM

from .doubles import (
    VendorDouble,
    akamai_contract,
    cloudflare_contract,
    fastly_contract,
    running_double,
)
from .harness import call, redis_prefix, wrapped

pytestmark = [pytest.mark.redis]

FASTLY_TOKEN = "fastly-token-for-tests-0123456789"
CLOUDFLARE_TOKEN = "cloudflare-token-for-tests-0123456789"
AKAMAI = {"client_token": "akab-client-token-tests", "access_token": "akab-access-token-tests",
          "client_secret": "c2VjcmV0LWZvci10ZXN0cy0wMTIzNDU2Nzg5MDEyMzQ1Ng=="}


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


def _app(double: VendorDouble, kind: str, tmp_path: Path, prefix: str, **target: Any) -> Any:
    settings: dict[str, Any] = {"kind": kind, "urls": [double.url], **target}
    app = wrapped({kind: settings}, dialect=kind, state_dir=tmp_path, prefix=prefix)
    app.runtime.startup()
    return app


def _items(received: list[Any], field: str) -> list[str]:
    return [item for request in received for item in request.json()[field]]


def test_fastly_purges_surrogate_keys_in_batches_of_256_and_urls(tmp_path: Path, prefix: str) -> None:
    with running_double(fastly_contract(service_id="SU1Z0isxPaozGVKXdv0eY", token=FASTLY_TOKEN)) as double:
        app = _app(double, "fastly", tmp_path, prefix, service_id="SU1Z0isxPaozGVKXdv0eY",
                   token=FASTLY_TOKEN, soft=True)
        try:
            tags = [f"product:{number}" for number in range(600)]
            app.runtime.invalidate(tags)
            received = double.wait_for(lambda got: len(_items(got, "surrogate_keys")) >= 600)
            assert sorted(_items(received, "surrogate_keys")) == sorted(tags)
            assert len(received) == 3  # 256 + 256 + 88: the fewest calls within the limit
            assert all(request.headers.get("fastly-soft-purge") == "1" for request in received)
            assert call(app, "POST", "/products/7") == 200  # RFC 9111 §4.4: purge its URL too
            url_purge = double.wait_for(lambda got: any(r.path.startswith("/purge/") for r in got))
            assert [r.path for r in url_purge if r.path.startswith("/purge/")] == [
                "/purge/shop.example/products/7"]
        finally:
            app.runtime.close()
    assert double.violations == []


def test_cloudflare_purges_tags_and_files_within_100_per_call(tmp_path: Path, prefix: str) -> None:
    with running_double(cloudflare_contract(zone_id="023e105f4ecef8ad9ca31a8372d0c353",
                                            token=CLOUDFLARE_TOKEN)) as double:
        app = _app(double, "cloudflare", tmp_path, prefix, zone_id="023e105f4ecef8ad9ca31a8372d0c353",
                   token=CLOUDFLARE_TOKEN)
        try:
            tags = [f"category:{number}" for number in range(250)] + ["a,b"]  # ',' is encoded
            app.runtime.invalidate(tags)
            received = double.wait_for(lambda got: len(_items(got, "tags")) >= 251)
            assert len(received) == 3
            assert sorted(_items(received, "tags")) == sorted(tags[:-1] + ["a%2Cb"])
            assert call(app, "PUT", "/cart/items/3") == 200
            files = double.wait_for(lambda got: any("files" in r.json() for r in got))
            assert [r.json()["files"] for r in files if "files" in r.json()] == [
                ["http://shop.example/cart/items/3"]]
        finally:
            app.runtime.close()
    assert double.violations == []


def test_akamai_invalidates_by_tag_and_url_signed_and_under_50000_bytes(tmp_path: Path, prefix: str) -> None:
    with running_double(akamai_contract(**AKAMAI, network="staging")) as double:
        app = _app(double, "akamai", tmp_path, prefix, host="akab-xxxx.purge.akamaiapis.net",
                   network="staging", **AKAMAI)
        try:
            # 1,200 tags of ~100 bytes: ~120 KB of objects, so at least three bodies.
            tags = [f"sku:{number:04d}:" + "x" * 90 for number in range(1200)]
            app.runtime.invalidate(tags)
            received = double.wait_for(lambda got: len(_items(got, "objects")) >= 1200)
            assert len(received) >= 3 and all(len(r.body) <= 50_000 for r in received)
            assert sorted(_items(received, "objects")) == sorted(t.replace(":", "%3A") for t in tags)
            assert all(r.headers["authorization"].startswith(ALGORITHM) for r in received)
            assert call(app, "DELETE", "/basket") == 200
            urls = double.wait_for(lambda got: any(r.path.endswith("/url/staging") for r in got))
            assert [r.json() for r in urls if r.path.endswith("/url/staging")] == [
                {"objects": ["http://shop.example/basket"]}]
        finally:
            app.runtime.close()
    assert double.violations == []
