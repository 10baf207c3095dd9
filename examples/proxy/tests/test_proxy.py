"""The caching proxy end to end over HTTP: a real upstream under uvicorn, the proxy under
uvicorn in front of it, httpx as the client. No sleeps for timing: freshness comes from
``max-age=0`` (stale at once) and ``max-age=3600`` (fresh for the whole test)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from examples.proxy.app import BUFFERED_BODY_BYTES
from tests.servers import run_server

pytestmark = pytest.mark.server
FRESH = "cc=max-age%3D3600"
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_server_args() -> list[str]:
    """The uvicorn options of the README's proxy command, but its --port (the test picks one)."""
    line = next(line for line in README.read_text().splitlines() if "uvicorn examples.proxy.app:app" in line)
    words = shlex.split(line)
    options = words[words.index("examples.proxy.app:app") + 1:]
    port = options.index("--port")
    return options[:port] + options[port + 2:]


@pytest.fixture(scope="module")
def upstream() -> Iterator[httpx.Client]:
    with run_server("uvicorn", "examples.proxy.tests.upstream:app") as base_url, \
            httpx.Client(base_url=base_url, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def proxy(upstream: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    state = tmp_path_factory.mktemp("proxy-state")
    env = {"UPSTREAM_URL": str(upstream.base_url).rstrip("/"), "SCALEKIT_STATE_DIR": str(state),
           "SCALEKIT_CACHE_RULES": '[{"path": "*.css"}]'}
    with run_server("uvicorn", "examples.proxy.app:app", env=env, extra_args=readme_server_args()) as base_url, \
            httpx.Client(base_url=base_url, timeout=20) as client:
        yield client


@pytest.fixture
def path(request: pytest.FixtureRequest) -> str:
    return "/" + request.node.name.replace("[", "-").replace("]", "")


def calls(upstream: httpx.Client, path: str) -> int:
    return int(upstream.get("/__calls", params={"path": path}).text)


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_one_date_and_one_server_header_as_the_readme_runs_it(proxy: httpx.Client, path: str) -> None:
    # RFC 9110 §6.6.1: one Date; a hit keeps the Date the origin sent.
    first = proxy.get(f"{path}?{FRESH}")
    second = proxy.get(f"{path}?{FRESH}")
    assert second.headers["cache-status"].startswith("scalekit; hit")
    for reply in (first, second):
        assert len(reply.headers.get_list("date")) == 1
        assert len(reply.headers.get_list("server")) == 1  # the upstream's (uvicorn's)
    assert second.headers["date"] == first.headers["date"]


def test_miss_then_hit(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    first = proxy.get(f"{path}?{FRESH}")
    second = proxy.get(f"{path}?{FRESH}")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert "fwd=uri-miss; stored" in first.headers["cache-status"]
    assert second.headers["cache-status"].startswith("scalekit; hit")
    assert "age" in second.headers
    assert calls(upstream, path) == 1


def test_a_body_larger_than_the_buffer_streams_through_and_is_stored_once_whole(
        proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    size = BUFFERED_BODY_BYTES + 4096  # the proxy passes it on piece by piece: a stream
    first = proxy.get(f"{path}?{FRESH}&size={size}")
    assert len(first.content) == size
    assert "stored" not in first.headers["cache-status"]  # stored after its last piece went out
    # The copy is stored once the last piece has gone out, which the client may see first (so
    # a request right after it may miss and be stored in turn: compare hits with each other).
    eventually(lambda: proxy.get(f"{path}?{FRESH}&size={size}").headers["cache-status"].startswith(
        "scalekit; hit"))
    hits = [proxy.get(f"{path}?{FRESH}&size={size}") for _ in range(2)]
    assert all(hit.headers["cache-status"].startswith("scalekit; hit") for hit in hits)
    assert hits[0].content == hits[1].content and len(hits[0].content) == size


def test_every_method_with_body_and_end_to_end_headers_reaches_the_upstream(proxy: httpx.Client) -> None:
    echoed = proxy.post("/__echo?a=1", content=b"payload", headers={"x-custom": "yes", "connection": "x-hop",
                                                                   "x-hop": "dropped"}).json()
    assert echoed["method"] == "POST" and echoed["body"] == "payload" and echoed["query"] == {"a": "1"}
    assert echoed["headers"]["x-custom"] == "yes"
    assert "x-hop" not in echoed["headers"]  # named by Connection: hop-by-hop (RFC 9110 §7.6.1)
    assert echoed["headers"]["x-forwarded-host"].startswith("127.0.0.1")
    assert proxy.request("DELETE", "/__echo").json()["method"] == "DELETE"


def test_unsafe_method_invalidates(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    proxy.get(f"{path}?{FRESH}")
    assert proxy.get(f"{path}?{FRESH}").headers["cache-status"].startswith("scalekit; hit")
    proxy.put(f"{path}?{FRESH}", content=b"new")
    assert "fwd=uri-miss" in proxy.get(f"{path}?{FRESH}").headers["cache-status"]


def test_private_and_cookies_are_not_shared(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    for _ in range(2):
        proxy.get(f"{path}?{FRESH}&cookie=1")
        proxy.get(f"{path}?cc=private")
    assert calls(upstream, path) == 4


def test_vary_variants(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    url = f"{path}?{FRESH}&vary=Accept-Language"
    en = proxy.get(url, headers={"accept-language": "en"})
    fr = proxy.get(url, headers={"accept-language": "fr"})
    assert proxy.get(url, headers={"accept-language": "en"}).content == en.content
    assert proxy.get(url, headers={"accept-language": "fr"}).content == fr.content
    assert en.content != fr.content and calls(upstream, path) == 2


def test_revalidation_and_client_conditionals(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    url = f"{path}?cc=max-age%3D0&etag=1"
    first = proxy.get(url)
    second = proxy.get(url)  # stale at once: validated with If-None-Match, the upstream says 304
    assert second.status_code == 200 and second.content == first.content
    assert "fwd-status=304" in second.headers["cache-status"]
    fresh = f"{path}/fresh?{FRESH}&etag=1"
    proxy.get(fresh)
    not_modified = proxy.get(fresh, headers={"if-none-match": '"v1"'})
    assert not_modified.status_code == 304 and not_modified.headers["etag"] == '"v1"'


def test_range_from_the_cache(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    url = f"{path}?{FRESH}&size=100"
    full = proxy.get(url)
    part = proxy.get(url, headers={"range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == full.content[:10]
    assert calls(upstream, path) == 1


def test_partial_content_is_stored_and_combined(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    # RFC 9111 §3.3-§3.4: pieces are stored, answer the ranges they contain, and combine.
    url = f"{path}?{FRESH}&etag=1&ranges=1&size=100"
    head = proxy.get(url, headers={"range": "bytes=0-49"})
    assert head.status_code == 206 and "stored" in head.headers["cache-status"]
    inner = proxy.get(url, headers={"range": "bytes=5-9"})
    assert inner.status_code == 206 and inner.content == head.content[5:10]
    assert inner.headers["cache-status"].startswith("scalekit; hit")
    tail = proxy.get(url, headers={"range": "bytes=50-99"})
    assert tail.status_code == 206 and "fwd=partial" in tail.headers["cache-status"]
    whole = proxy.get(url)
    assert whole.status_code == 200 and whole.content == head.content + tail.content
    assert whole.headers["cache-status"].startswith("scalekit; hit") and calls(upstream, path) == 2


def test_stale_while_revalidate(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    url = f"{path}?cc=max-age%3D0%2C%20stale-while-revalidate%3D3600"
    first = proxy.get(url)
    stale = proxy.get(url)
    assert stale.content == first.content and "hit" in stale.headers["cache-status"]
    eventually(lambda: calls(upstream, path) == 2)  # refreshed once, in the background


def test_stale_if_error(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    url = f"{path}?cc=max-age%3D0%2C%20stale-if-error%3D3600"
    good = proxy.get(url)
    upstream.post("/__fail", params={"mode": "500"})
    try:
        reply = proxy.get(url)
    finally:
        upstream.post("/__fail", params={"mode": ""})
    assert reply.status_code == 200 and reply.content == good.content
    assert "fwd=stale; fwd-status=500" in reply.headers["cache-status"]


def test_concurrent_misses_make_one_upstream_call(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    url = f"{path}?{FRESH}&sleep=500"
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: proxy.get(url), range(6)))
    assert len({reply.content for reply in replies}) == 1
    assert calls(upstream, path) == 1


def test_cdn_cache_control_is_obeyed_and_passed_on(proxy: httpx.Client, upstream: httpx.Client,
                                                   path: str) -> None:
    # RFC 9213: the proxy's target list is [CDN-Cache-Control]; Cache-Control is then ignored.
    url = f"{path}?cc=no-store&cdn=max-age%3D3600"
    first = proxy.get(url)
    assert "fwd=uri-miss; stored" in first.headers["cache-status"]
    second = proxy.get(url)
    assert second.headers["cache-status"].startswith("scalekit; hit")
    assert second.headers["cdn-cache-control"] == "max-age=3600" and second.headers["cache-control"] == "no-store"
    assert calls(upstream, path) == 1


def test_web_cache_deception(proxy: httpx.Client, upstream: httpx.Client) -> None:
    # A "*.css" rule, a private page reached as a stylesheet with a session cookie: not stored.
    path = "/account/settings-x.css"
    with httpx.Client(base_url=proxy.base_url, timeout=20) as fresh:  # no cookie jar from other tests
        alice = fresh.get(path, headers={"cookie": "session=alice"})
        assert "stored" not in alice.headers["cache-status"]
        stranger = fresh.get(path)
        assert not stranger.headers["cache-status"].startswith("scalekit; hit")
        assert calls(upstream, path) == 2
        fresh.get("/assets/site.css")
        assert fresh.get("/assets/site.css").headers["cache-status"].startswith("scalekit; hit")


@pytest.mark.parametrize("status", [400, 503])
def test_any_final_status_with_explicit_freshness_is_stored(proxy: httpx.Client, upstream: httpx.Client,
                                                            path: str, status: int) -> None:
    # RFC 9111 §3.
    url = f"{path}?{FRESH}&status={status}"
    assert proxy.get(url).status_code == status
    second = proxy.get(url)
    assert second.status_code == status and second.headers["cache-status"].startswith("scalekit; hit")
    assert calls(upstream, path) == 1


def test_a_list_valued_age_uses_its_first_member(proxy: httpx.Client, upstream: httpx.Client, path: str) -> None:
    # RFC 9111 §5.1: "Age: 7200, 0" is 7200 s old, so stale against max-age=3600.
    url = f"{path}?{FRESH}&age=7200,%200"
    assert proxy.get(url).headers["age"] == "7200"
    assert not proxy.get(url).headers["cache-status"].startswith("scalekit; hit")
    assert calls(upstream, path) == 2


def test_unreachable_upstream_is_502(tmp_path: Path) -> None:
    from tests.servers import free_port

    env = {"UPSTREAM_URL": f"http://127.0.0.1:{free_port()}", "SCALEKIT_STATE_DIR": str(tmp_path)}
    with run_server("uvicorn", "examples.proxy.app:app", env=env, extra_args=readme_server_args()) as base_url:
        reply = httpx.get(base_url + "/x", timeout=20)
        assert reply.status_code == 502
        assert reply.headers["proxy-status"] == "scalekit; error=connection_refused"  # RFC 9209
        assert len(reply.headers.get_list("date")) == 1
