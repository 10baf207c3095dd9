"""The purge endpoint is an invalidation source like the API and the CLI: an authorised
``POST /_scalekit/purge?tag=...`` reaches the configured edge (a Cloudflare purge by tag, checked
against the vendor's documented call by the contract double); a refused one reaches nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .doubles import cloudflare_contract, running_double
from .harness import redis_prefix, wrapped

pytestmark = [pytest.mark.redis]

CF_TOKEN = "cf-token-purge-endpoint-0123456789"
PURGE_TOKEN = "purge-endpoint-token-0123456789"


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


def test_the_purge_endpoint_purges_the_edge(tmp_path: Path, prefix: str) -> None:
    with running_double(cloudflare_contract(zone_id="zone", token=CF_TOKEN)) as double:
        target = {"kind": "cloudflare", "urls": [double.url], "zone_id": "zone", "token": CF_TOKEN}
        app = wrapped({"cf": target}, dialect="cloudflare", state_dir=tmp_path, prefix=prefix,
                      allowed_hosts=["shop.example"], cache={"invalidation": {"purge_token": PURGE_TOKEN}})
        app.runtime.startup()
        try:
            with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.example") as client:
                refused = client.post("/_scalekit/purge?tag=product:8",
                                      headers={"Authorization": "Bearer not-the-token-0123456789"})
                assert refused.status_code == 401
                accepted = client.post("/_scalekit/purge?tag=product:7",
                                       headers={"Authorization": f"Bearer {PURGE_TOKEN}"})
                assert accepted.status_code in (200, 202), accepted.text
            received = double.wait_for(lambda got: len(got) >= 1)
            assert app.runtime.services["cdn.purge"].wait_idle(10.0)
        finally:
            app.runtime.close()
    assert [request.json() for request in double.received] == [{"tags": ["product:7"]}]
    assert received and double.violations == []
