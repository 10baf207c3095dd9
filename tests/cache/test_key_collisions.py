"""Two requests the app could tell apart never share a cache entry.

The app sees the Host as sent, the decoded path, each query parameter's values in order, and
the request body; the key must keep every one of them apart (or the cache must step aside:
a request whose Host is not in canonical form, or a GET/HEAD carrying a body, is neither served
from the cache nor stored). Checked on the key builder directly, and end to end: an app that
answers with what it saw, behind the cache, must always answer each request with its own view.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalekit.asgi import ASGIRoot
from scalekit.cache import layer
from scalekit.cache.keys import KeyBuilder
from scalekit.config import load_config
from scalekit.runtime import Runtime
from scalekit.wsgi import WSGIRoot
from tests.cache.origin_app import FakeClock

KEYS = KeyBuilder(allowed_hosts=("*",), ignored_query_params=())


# ------------------------------------------------------------------ the key builder


@pytest.mark.parametrize("first, second", [
    pytest.param(("/cms/about?ref=newsletter", ""), ("/cms/about", "ref=newsletter"),
                 id="an encoded ? in the path is not a query"),
    pytest.param(("/a#b", ""), ("/a", ""), id="an encoded # in the path"),
    pytest.param(("/a%3Fb", ""), ("/a?b", ""), id="an encoded % in the path"),
    pytest.param(("/a", "x=1&x=2"), ("/a", "x=2&x=1"), id="repeated parameter, values in order"),
    pytest.param(("/a", "a=1&%61=2"), ("/a", "%61=2&a=1"), id="one name spelled two ways"),
    pytest.param(("/a\x1fb", ""), ("/a%1Fb", ""), id="a control character in the path"),
])
def test_requests_the_app_tells_apart_get_different_keys(first: tuple[str, str],
                                                         second: tuple[str, str]) -> None:
    assert KEYS.primary_key("http", "a.test", *first) != KEYS.primary_key("http", "a.test", *second)


@pytest.mark.parametrize("first, second", [
    pytest.param("b=1&a=2", "a=2&b=1", id="different names in any order"),
    pytest.param("a=1&&b=2", "b=2&a=1", id="empty pieces"),
])
def test_requests_the_app_sees_alike_share_a_key(first: str, second: str) -> None:
    assert KEYS.primary_key("http", "a.test", "/p", first) == KEYS.primary_key("http", "a.test", "/p", second)


@pytest.mark.parametrize("host", ["LOCALHOST", "localhost.", "localhost:80", " localhost", "Localhost:8080"])
def test_a_host_not_in_canonical_form_gets_no_key(host: str) -> None:
    assert KEYS.primary_key("http", host, "/", "") is None
    assert KEYS.primary_key("http", "localhost", "/", "") == "http://localhost/"
    assert KEYS.primary_key("https", "localhost:80", "/", "") == "https://localhost:80/"


def test_keys_hold_no_separator_characters() -> None:
    key = KEYS.primary_key("http", "a.test", "/p\x1e\x1f", "a=\x1e\x1f")
    assert key is not None and "\x1e" not in key and "\x1f" not in key


def test_a_long_key_is_kept_short_and_distinct() -> None:
    first = KEYS.primary_key("http", "a.test", "/p", "q=" + "x" * 5000 + "1")
    second = KEYS.primary_key("http", "a.test", "/p", "q=" + "x" * 5000 + "2")
    assert first is not None and second is not None and first != second
    assert len(first) <= 512 and first.startswith("http://a.test/p?q=xxx")


def app_view(host: str, path: str, query: str) -> tuple[str, str, dict[str, list[str]]]:
    """What a framework hands the app: Host, decoded path, each parameter's values in order."""
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return host, path, params


hosts = st.sampled_from(["a.test", "A.test", "a.test.", "a.test:80", "a.test:8080", "b.test"])
paths = st.text("/a?%#=&\x1f", max_size=6).map(lambda text: "/" + text)
queries = st.text("ab=1&%+;?#", max_size=8)
requests = st.tuples(hosts, paths, queries)


@settings(max_examples=300, deadline=None)
@given(st.lists(requests, min_size=2, max_size=12))
def test_requests_sharing_a_key_look_the_same_to_the_app(batch: list[tuple[str, str, str]]) -> None:
    seen: dict[str, tuple[str, str, dict[str, list[str]]]] = {}
    for host, path, query in batch:
        key = KEYS.primary_key("http", host, path, query)
        if key is not None:
            assert seen.setdefault(key, app_view(host, path, query)) == app_view(host, path, query)


# ------------------------------------------------------------------ end to end


def view_of(host: str, path: str, query: str, body: bytes) -> bytes:
    return json.dumps([*app_view(host, path, query), body.decode("latin-1")]).encode()


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response("200 OK", [("content-type", "application/json"), ("cache-control", "max-age=600")])
    return [view_of(environ["HTTP_HOST"], environ["PATH_INFO"], environ["QUERY_STRING"], body)]


async def echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    host = dict(scope["headers"])[b"host"].decode("latin-1")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"cache-control", b"max-age=600")]})
    await send({"type": "http.response.body",
                "body": view_of(host, scope["path"], scope["query_string"].decode("latin-1"), body)})


class Echo:
    """The echo app behind the cache layer, called in-process with the request as a server
    would hand it over (PATH_INFO and scope["path"] decoded)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        config = load_config({"cache": {"disk": {"enabled": False}}, "cdn": {"enabled": False},
                              "allowed_hosts": ["*"]}, environ={}, cwd="/nonexistent")
        self.runtime = Runtime(config, clock=FakeClock())
        if kind == "wsgi":
            self.app: Any = WSGIRoot(echo_wsgi, layer.wrap_wsgi(echo_wsgi, self.runtime), self.runtime)
        else:
            self.app = ASGIRoot(echo_asgi, layer.wrap_asgi(echo_asgi, self.runtime), self.runtime)
            self.loop = asyncio.new_event_loop()

    def request(self, host: str, path: str, query: str, body: bytes = b"",
                headers: dict[str, str] | None = None, method: str = "GET") -> tuple[bytes, str]:
        headers = dict(headers or {})
        if body:
            headers.setdefault("content-length", str(len(body)))
        if self.kind == "wsgi":
            return self._wsgi(method, host, path, query, body, headers)
        return self.loop.run_until_complete(self._asgi(method, host, path, query, body, headers))

    def _wsgi(self, method: str, host: str, path: str, query: str, body: bytes,
              headers: dict[str, str]) -> tuple[bytes, str]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "a.test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": host, "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": False,
            "wsgi.multiprocess": False, "wsgi.run_once": False}
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else "HTTP_" + key] = value
        started: dict[str, Any] = {}
        chunks = self.app(environ, lambda status, pairs, exc=None: started.update(pairs=pairs))
        out = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
        return out, {name.lower(): value for name, value in started["pairs"]}.get("cache-status", "")

    async def _asgi(self, method: str, host: str, path: str, query: str, body: bytes,
                    headers: dict[str, str]) -> tuple[bytes, str]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode("utf-8", "surrogateescape"),
                 "root_path": "", "query_string": query.encode("latin-1"),
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
                 "headers": [(b"host", host.encode("latin-1"))]
                 + [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]}
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        out = b"".join(message.get("body", b"") for message in sent[1:])
        status = dict(sent[0]["headers"]).get(b"cache-status", b"").decode("latin-1")
        return out, status

    def close(self) -> None:
        if self.kind == "asgi":
            self.loop.close()
        self.runtime.close()


@pytest.fixture(params=["wsgi", "asgi"])
def echo(request: pytest.FixtureRequest) -> Any:
    app = Echo(request.param)
    yield app
    app.close()


bodies = st.sampled_from([b"", b"", b"", b"x", b"other body"])


# One app for all examples on purpose: entries stored by earlier examples must not leak either.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(hosts, paths, queries, bodies), min_size=2, max_size=10))
def test_every_answer_is_the_apps_answer_to_that_request(
        echo: Echo, batch: list[tuple[str, str, str, bytes]]) -> None:
    for host, path, query, body in batch:
        answer, _ = echo.request(host, path, query, body)
        assert answer == view_of(host, path, query, body)


def test_a_get_with_a_body_is_neither_served_nor_stored(echo: Echo) -> None:
    plain = view_of("a.test", "/fat", "", b"")
    assert echo.request("a.test", "/fat", "") == (plain, "scalekit; fwd=uri-miss; stored; ttl=600")
    answer, status = echo.request("a.test", "/fat", "", b"q=1")
    assert answer == view_of("a.test", "/fat", "", b"q=1") and "hit" not in status
    assert echo.request("a.test", "/fat", "")[0] == plain  # the stored one, untouched
    assert "hit" in echo.request("a.test", "/fat", "")[1]


@pytest.mark.parametrize("headers", [
    pytest.param({"transfer-encoding": "chunked"}, id="chunked"),
    pytest.param({"content-length": "3"}, id="content-length"),
])
def test_a_body_first_leaves_nothing_stored(echo: Echo, headers: dict[str, str]) -> None:
    echo.request("a.test", "/fat-first", "", b"q=1", headers=headers)
    answer, status = echo.request("a.test", "/fat-first", "")
    assert answer == view_of("a.test", "/fat-first", "", b"") and "hit" not in status


def test_an_empty_body_is_no_body(echo: Echo) -> None:
    echo.request("a.test", "/empty", "", headers={"content-length": "0"})
    assert "hit" in echo.request("a.test", "/empty", "", headers={"content-length": "0"})[1]


@pytest.mark.parametrize("host", ["LOCALHOST", "localhost.", "localhost:80", "LocalHost"])
def test_a_host_in_another_form_is_neither_served_nor_stored(echo: Echo, host: str) -> None:
    canonical = view_of("localhost", "/h", "", b"")
    echo.request("localhost", "/h", "")
    assert echo.request(host, "/h", "")[0] == view_of(host, "/h", "", b"")
    assert echo.request("localhost", "/h", "") == (canonical, "scalekit; hit; ttl=600; detail=memory")
