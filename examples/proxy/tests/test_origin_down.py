"""The proxy in front of an origin that fails the way real ones do, over HTTP: connections
refused, reset or left unanswered, and a keep-alive connection poisoned by a response longer
than its Content-Length. The origin is raw sockets (``raw_origin.py``); the proxy runs under
uvicorn with the README's options and a 1 s upstream timeout.

RFC 9111 §4.2.4: a disconnected cache serves a stale entry unless a directive forbids it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from examples.proxy.tests.raw_origin import RawOrigin
from examples.proxy.tests.test_proxy import readme_server_args
from tests.servers import run_server

pytestmark = pytest.mark.server
STALE_WITH_ETAG = "cc=max-age%3D0&etag=v1"  # stored (it has a validator), stale at once


@pytest.fixture(scope="module")
def origin() -> Iterator[RawOrigin]:
    server = RawOrigin()
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(origin: RawOrigin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = {"UPSTREAM_URL": origin.url, "SCALEKIT_STATE_DIR": str(tmp_path_factory.mktemp("proxy-state")),
           "UPSTREAM_TIMEOUT_SECONDS": "1"}
    with run_server("uvicorn", "examples.proxy.app:app", env=env, extra_args=readme_server_args()) as base_url, \
            httpx.Client(base_url=base_url, timeout=20) as client:
        yield client


@pytest.fixture
def healthy_afterwards(origin: RawOrigin) -> Iterator[None]:
    yield
    origin.mode = "ok"
    if not origin.listening:
        origin.listen()


def served_stale(reply: httpx.Response, body: bytes) -> bool:
    status = reply.headers["cache-status"]
    return (reply.status_code == 200 and reply.content == body and "fwd=stale" in status
            and "detail=origin-unreachable" in status)


@pytest.mark.usefixtures("healthy_afterwards")
def test_refused_serves_stale(proxy: httpx.Client, origin: RawOrigin) -> None:
    good = proxy.get(f"/refused?{STALE_WITH_ETAG}")
    assert "stored" in good.headers["cache-status"]
    origin.refuse()
    assert served_stale(proxy.get(f"/refused?{STALE_WITH_ETAG}"), good.content)
    nothing = proxy.get(f"/refused-new?{STALE_WITH_ETAG}")  # nothing stored: the gateway error
    assert nothing.status_code == 502
    assert nothing.headers["proxy-status"] == "scalekit; error=connection_refused"


@pytest.mark.usefixtures("healthy_afterwards")
@pytest.mark.parametrize("mode, status", [("reset", 502), ("stall", 504)])
def test_reset_or_timeout_serves_stale(proxy: httpx.Client, origin: RawOrigin, mode: str, status: int) -> None:
    good = proxy.get(f"/{mode}?{STALE_WITH_ETAG}")
    origin.mode = mode
    assert served_stale(proxy.get(f"/{mode}?{STALE_WITH_ETAG}"), good.content)
    assert proxy.get(f"/{mode}-new").status_code == status


@pytest.mark.usefixtures("healthy_afterwards")
def test_must_revalidate_is_never_served_stale(proxy: httpx.Client, origin: RawOrigin) -> None:
    url = "/strict?cc=max-age%3D0%2C%20must-revalidate&etag=v1"
    proxy.get(url)
    origin.refuse()
    reply = proxy.get(url)
    assert reply.status_code == 502 and "proxy-status" in reply.headers


@pytest.mark.usefixtures("healthy_afterwards")
def test_a_poisoned_keep_alive_connection_is_retried_once(proxy: httpx.Client, origin: RawOrigin) -> None:
    origin.mode = "overflow"  # 6 bytes past Content-Length stay in the kept-alive connection
    assert proxy.get("/poison").status_code == 200
    origin.mode = "ok"
    reply = proxy.get("/after-poison")  # the reused connection fails at once: a new one answers
    assert reply.status_code == 200 and reply.content.startswith(b"GET /after-poison")
    assert proxy.get("/after-poison-again").status_code == 200  # and the pool is healthy again
