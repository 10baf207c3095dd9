"""A miss keys the request once and asks L1 once: the early path, finding nothing in L1 under
the key it computed, hands the key to the full path, which asks only the tiers after L1.

- For any request the early path keys, the key it hands over is the key the full path would
  have computed itself (both shells).
- After the hand-off the tiers after L1 are still asked: an entry only on disk is served from
  disk and put back in L1, the origin untouched, and L1's miss is counted once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from scalekit.cache import layer
from scalekit.cache.asgi import request_view as asgi_request_view
from scalekit.cache.flow import admit
from scalekit.cache.hot import EARLY_MISS_KEY
from scalekit.cache.wsgi import request_view as wsgi_request_view
from tests.cache.origin_app import START_TIME, FakeClock, Origin, make_runtime, origin_asgi, origin_wsgi

SEGMENT = st.text(st.sampled_from("abcXYZ019-._~%20+"), min_size=0, max_size=6)
PATHS = st.lists(SEGMENT, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
QUERIES = st.lists(st.tuples(st.sampled_from(["a", "b", "utm_source", "B", "q"]),
                             st.text(st.sampled_from("xy1 %+&="), max_size=4)), max_size=3).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs))
HOSTS = st.sampled_from(["test", "TEST", "test:80", "a.example.com", "A.Example.com:8080", "localhost:8000"])


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@settings(max_examples=300, deadline=None)
@given(path=PATHS, query=QUERIES, host=HOSTS, scheme=st.sampled_from(["http", "https"]),
       script=st.sampled_from(["", "/app"]), method=st.sampled_from(["GET", "HEAD"]))
def test_the_key_handed_over_is_the_key_the_full_path_computes(
        path: str, query: str, host: str, scheme: str, script: str, method: str) -> None:
    runtime = make_runtime(FakeClock(START_TIME), coalesce=False, ignored_query_params=["utm_*"])
    try:
        wsgi_cache = layer.wrap_wsgi(origin_wsgi(Origin()), runtime)
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": script,
                   "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": scheme, "HTTP_HOST": host}
        assert wsgi_cache.serve_early(environ) is None
        if EARLY_MISS_KEY in environ:
            assert environ[EARLY_MISS_KEY] == admit(wsgi_cache.core, wsgi_request_view(environ))[0]
        asgi_cache = layer.wrap_asgi(origin_asgi(Origin()), runtime)
        scope = {"type": "http", "method": method, "path": path, "scheme": scheme, "root_path": "",
                 "query_string": query.encode(), "server": ("test", 80), "headers": [(b"host", host.encode())]}
        assert asgi_cache.serve_early(scope) is None
        if EARLY_MISS_KEY in scope:
            assert scope[EARLY_MISS_KEY] == admit(asgi_cache.core, asgi_request_view(scope))[0]
        # Both shells' early paths key the same requests (a Host not already normalised, say
        # "TEST" or "test:80", is left to the full path, which normalises it).
        assert (EARLY_MISS_KEY in environ) == (EARLY_MISS_KEY in scope)
        if host in ("test", "a.example.com", "localhost:8000") and method == "GET":
            assert EARLY_MISS_KEY in environ
    finally:
        runtime.close()


def wsgi_get(cache: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "cc=max-age=60",
               "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "test"}
    body = cache(environ, start_response)
    data = b"".join(body)
    getattr(body, "close", lambda: None)()
    assert EARLY_MISS_KEY not in environ  # taken by the full path, not left for the app
    return seen["status"], seen["headers"], data


def asgi_get(cache: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "scheme": "http", "server": ("test", 80),
             "query_string": b"cc=max-age=60", "headers": [(b"host", b"test")]}
    asyncio.run(cache(scope, receive, send))
    assert EARLY_MISS_KEY not in scope
    return (sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]))


def test_after_the_hand_off_the_tiers_past_l1_are_still_asked(tmp_path: Path) -> None:
    for kind in ("wsgi", "asgi"):
        clock = FakeClock(START_TIME)
        origin = Origin(clock)
        runtime = make_runtime(clock, coalesce=False, disk={"enabled": True, "path": str(tmp_path / kind)})
        try:
            if kind == "wsgi":
                cache, get = layer.wrap_wsgi(origin_wsgi(origin), runtime), wsgi_get
            else:
                cache, get = layer.wrap_asgi(origin_asgi(origin), runtime), asgi_get
            first = get(cache, "/page")
            assert "stored" in first[1]["cache-status"] and origin.calls == {"/page": 1}
            key = cache.policy.keys.primary_key("http", "test", "/page", "cc=max-age=60")
            cache.store.memory.delete(key)  # on disk only now
            misses = sample("scalekit_cache_lookups_total", {"tier": "memory", "outcome": "miss"})
            second = get(cache, "/page")
            assert origin.calls == {"/page": 1}, kind  # served from disk, not the origin
            assert second[2] == first[2] and "hit" in second[1]["cache-status"], second
            assert sample("scalekit_cache_lookups_total", {"tier": "memory", "outcome": "miss"}) == misses + 1
            assert cache.store.memory_peek(key) is not None  # put back in L1
        finally:
            runtime.close()
