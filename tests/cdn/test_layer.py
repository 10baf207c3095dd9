"""The CDN layer in the pipeline: one scenario set, run under WSGI and ASGI.

Stamping, ETag generation (only for a body produced whole, within the limit and with a
Content-Length; a body produced in pieces is never held back),
conditional GET/HEAD answered 304/412 with the right headers and no body, streaming left
untouched, unsafe-method preconditions left to the app, and the 304 metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

import scalekit
from scalekit.cdn import check_preconditions
from scalekit.cdn.etag import body_etag
from tests.direct import asgi_scope, call_asgi, call_wsgi

P = pytest.param
PAGE_RULES = {"rules": [{"path": "/**", "policy": "page"}]}


@dataclass
class Reply:
    """What the test app answers."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "text/html")])
    chunks: list[bytes] = field(default_factory=lambda: [b"<h1>hello</h1>" * 10])
    content_length: bool = True
    tags: tuple[str, ...] = ()
    generator: bool = False  # WSGI: yield chunks lazily (start_response at the first one)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def all_headers(self) -> list[tuple[str, str]]:
        extra = [("Content-Length", str(len(self.body)))] if self.content_length else []
        return self.headers + extra


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: int
    raw_headers: list[tuple[str, str]]


def wsgi_app_for(reply: Reply, calls: list[str]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["REQUEST_METHOD"])
        scalekit.tag(*reply.tags)
        if reply.generator:
            def generate() -> Iterator[bytes]:
                start_response(f"{reply.status} X", reply.all_headers())
                yield from reply.chunks
            return generate()
        start_response(f"{reply.status} X", reply.all_headers())
        return list(reply.chunks)
    return app


def asgi_app_for(reply: Reply, calls: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append(scope["method"])
        scalekit.tag(*reply.tags)
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(n.lower().encode(), v.encode()) for n, v in reply.all_headers()]})
        for index, chunk in enumerate(reply.chunks):
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": index < len(reply.chunks) - 1})
    return app


class Driver:
    """Wraps an app of the driver's kind with scalekit (CDN layer only) and calls it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[str] = []

    def wrap(self, app_for: Callable[[list[str]], Any] | Reply, **cdn: Any) -> Any:
        if isinstance(app_for, Reply):
            reply = app_for
            app = (wsgi_app_for if self.kind == "wsgi" else asgi_app_for)(reply, self.calls)
        else:
            app = app_for(self.calls)
        return scalekit.wrap(app, kind=self.kind, metrics=False, cache=False, pool=False, cdn=cdn or {})

    def request(self, wrapped: Any, method: str = "GET", path: str = "/page",
                headers: list[tuple[str, str]] | None = None) -> Result:
        headers = headers or []
        if self.kind == "wsgi":
            result = call_wsgi(wrapped, method, path, headers=headers)
            raw = result.headers
            return Result(result.status_code, _merged(raw), result.body, len(result.chunks), raw)
        scope = asgi_scope(method, path, headers=[(n.lower().encode(), v.encode()) for n, v in headers])
        asgi_result = call_asgi(wrapped, scope)
        raw = [(n.decode(), v.decode()) for n, v in asgi_result.headers]
        bodies = [m for m in asgi_result.sent if m["type"] == "http.response.body"]
        return Result(asgi_result.status, _merged(raw), asgi_result.body, len(bodies), raw)


def _merged(headers: list[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


@pytest.fixture(params=["wsgi", "asgi"])
def driver(request: pytest.FixtureRequest) -> Driver:
    return Driver(request.param)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --------------------------------------------------------------------------- stamping and ETag


def test_page_is_stamped_with_a_strong_etag_and_surrogate_keys(driver: Driver) -> None:
    reply = Reply(tags=("product:42",))
    wrapped = driver.wrap(reply, surrogate_keys="fastly", **PAGE_RULES)
    result = driver.request(wrapped)
    assert result.status == 200 and result.body == reply.body
    assert result.headers["cache-control"] == "public, max-age=0, s-maxage=60"
    assert result.headers["cdn-cache-control"] == "max-age=60, stale-while-revalidate=30, stale-if-error=300"
    assert result.headers["surrogate-key"] == "product:42"
    assert result.headers["etag"] == body_etag(reply.body)
    assert result.headers["content-length"] == str(len(reply.body))


def test_apps_etag_is_kept_and_weak_etags_match_weakly(driver: Driver) -> None:
    reply = Reply(headers=[("Content-Type", "text/html"), ("ETag", 'W/"v7"')])
    wrapped = driver.wrap(reply)
    assert driver.request(wrapped).headers["etag"] == 'W/"v7"'
    not_modified = driver.request(wrapped, headers=[("If-None-Match", '"v7"')])
    assert not_modified.status == 304 and not_modified.body == b""


@pytest.mark.parametrize("reply, reason", [
    P(Reply(chunks=[b"x" * 600, b"y" * 600]), "over etag_max_body_bytes", id="too large"),
    P(Reply(content_length=False, chunks=[b"a", b"b", b"c"]), "no Content-Length: may be a stream",
      id="no length"),
])
def test_bodies_outside_the_limit_stream_untouched(driver: Driver, reply: Reply, reason: str) -> None:
    if driver.kind == "wsgi":
        reply.generator = True
    wrapped = driver.wrap(reply, etag_max_body_bytes=1000)
    result = driver.request(wrapped)
    assert "etag" not in result.headers, reason
    assert result.body == reply.body and result.chunks == len(reply.chunks)


def test_unchanged_headers_leave_exactly_as_the_app_sent_them(driver: Driver) -> None:
    reply = Reply(headers=[("Content-Type", "text/plain"), ("Cache-Control", "no-store")])
    result = driver.request(driver.wrap(reply))
    # WSGI keeps the app's header-name case; ASGI names are lower-case bytes by the spec.
    expected = reply.all_headers() if driver.kind == "wsgi" else [(n.lower(), v) for n, v in reply.all_headers()]
    assert result.raw_headers == expected


def test_streaming_response_is_not_held_back() -> None:
    """ASGI: with no Content-Length, the start and first chunk leave before the app goes on."""
    order: list[str] = []

    def app_for(calls: list[str]) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            order.append("app continues")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return app

    wrapped = Driver("asgi").wrap(app_for)
    call_asgi(wrapped, send_hook=lambda message: order.append(message["type"]))
    assert order == ["http.response.start", "http.response.body", "app continues", "http.response.body"]


def test_a_declared_length_body_sent_in_pieces_is_not_held_back_for_an_etag() -> None:
    """ASGI and WSGI: a body of a declared length the app produces in pieces is a stream: each
    piece leaves before the app makes the next, without an ETag (hashing it would mean holding
    it all back). A WSGI list is in memory already and is still hashed."""
    pieces = [b"a" * 10, b"b" * 10, b"c" * 10]
    headers = [("content-type", "text/plain"), ("content-length", "30")]
    order: list[str] = []

    def asgi_for(calls: list[str]) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(n.encode(), v.encode()) for n, v in headers]})
            for index, piece in enumerate(pieces):
                order.append(f"app sends {index}")
                await send({"type": "http.response.body", "body": piece, "more_body": index < 2})
        return app

    def wsgi_for(calls: list[str]) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
            start_response("200 OK", headers)
            for index, piece in enumerate(pieces):
                order.append(f"app sends {index}")
                yield piece
        return app

    result = call_asgi(Driver("asgi").wrap(asgi_for),
                       send_hook=lambda message: order.append(message["type"]))
    assert order == ["app sends 0", "http.response.start", "http.response.body", "app sends 1",
                     "http.response.body", "app sends 2", "http.response.body"]
    assert b"etag" not in dict(result.headers) and result.body == b"".join(pieces)
    order.clear()
    wsgi_result = call_wsgi(Driver("wsgi").wrap(wsgi_for), on_chunk=lambda chunk: order.append("client"))
    assert order == ["app sends 0", "client", "app sends 1", "client", "app sends 2", "client"]
    assert "etag" not in dict(wsgi_result.headers) and wsgi_result.body == b"".join(pieces)
    listed = call_wsgi(Driver("wsgi").wrap(lambda calls: lambda environ, start: (start("200 OK", headers), pieces)[1]))
    assert dict(listed.headers)["etag"] == body_etag(b"".join(pieces))


# --------------------------------------------------------------------------- conditional requests


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_answers_304_without_body(driver: Driver, method: str) -> None:
    reply = Reply(tags=("a",))
    wrapped = driver.wrap(reply, surrogate_keys="cloudflare", **PAGE_RULES)
    etag = driver.request(wrapped).headers["etag"]
    before_count = metric("scalekit_cdn_not_modified_total")
    before_bytes = metric("scalekit_cdn_bytes_saved_total")
    result = driver.request(wrapped, method, headers=[("If-None-Match", f'"other", {etag}')])
    assert result.status == 304 and result.body == b""
    # RFC 9110 §15.4.5: the validators and cache fields of the 200, no representation metadata.
    assert result.headers == {"cache-control": "public, max-age=0, s-maxage=60",
                              "cdn-cache-control": "max-age=60, stale-while-revalidate=30, stale-if-error=300",
                              "cache-tag": "a", "etag": etag}
    assert metric("scalekit_cdn_not_modified_total") == before_count + 1
    if method == "GET":
        assert metric("scalekit_cdn_bytes_saved_total") == before_bytes + len(reply.body)


def test_if_modified_since_with_last_modified(driver: Driver) -> None:
    reply = Reply(headers=[("Content-Type", "text/html"), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")])
    wrapped = driver.wrap(reply)
    assert driver.request(wrapped, headers=[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")]).status == 304
    assert driver.request(wrapped, headers=[("If-Modified-Since", "Sat, 05 Nov 1994 08:49:37 GMT")]).status == 200
    # If-None-Match takes precedence: a non-matching tag means a full response.
    assert driver.request(wrapped, headers=[("If-None-Match", '"nope"'),
                                            ("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")]).status == 200


def test_failing_if_match_on_get_is_412(driver: Driver) -> None:
    wrapped = driver.wrap(Reply())
    result = driver.request(wrapped, headers=[("If-Match", '"stale"')])
    assert result.status == 412 and result.headers["cache-control"] == "no-store"
    assert driver.request(wrapped, headers=[("If-Match", body_etag(Reply().body))]).status == 200


def test_conditionals_on_non_200_are_ignored(driver: Driver) -> None:
    wrapped = driver.wrap(Reply(status=404, headers=[("Content-Type", "text/html"), ("ETag", '"x"')]))
    assert driver.request(wrapped, headers=[("If-None-Match", '"x"')]).status == 404


def test_conditional_requests_can_be_switched_off(driver: Driver) -> None:
    wrapped = driver.wrap(Reply(headers=[("Content-Type", "text/html"), ("ETag", '"x"')]),
                          conditional_requests=False)
    assert driver.request(wrapped, headers=[("If-None-Match", '"x"')]).status == 200


# --------------------------------------------------------------------------- unsafe methods


class Document:
    """A resource with a version, updated only when the client's If-Match is current."""

    def __init__(self) -> None:
        self.version = 1

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'


def test_unsafe_method_preconditions_are_the_apps_to_answer(driver: Driver) -> None:
    document = Document()

    def respond(status: int, etag: str) -> tuple[int, list[tuple[str, str]]]:
        return status, [("Content-Type", "text/plain"), ("ETag", etag), ("Content-Length", "0")]

    def handle(method: str) -> tuple[int, list[tuple[str, str]]]:
        if method == "PUT":
            failed = check_preconditions(etag=document.etag)
            if failed is not None:
                return respond(failed, document.etag)
            document.version += 1
        return respond(200, document.etag)

    def app_for(calls: list[str]) -> Any:
        if driver.kind == "wsgi":
            def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
                status, headers = handle(environ["REQUEST_METHOD"])
                start_response(f"{status} X", headers)
                return [b""]
            return wsgi_app

        async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            status, headers = handle(scope["method"])
            await send({"type": "http.response.start", "status": status,
                        "headers": [(n.lower().encode(), v.encode()) for n, v in headers]})
            await send({"type": "http.response.body", "body": b""})
        return asgi_app

    wrapped = driver.wrap(app_for)
    assert driver.request(wrapped, "PUT", headers=[("If-Match", '"v1"')]).status == 200
    assert document.version == 2
    stale = driver.request(wrapped, "PUT", headers=[("If-Match", '"v1"')])
    assert stale.status == 412 and document.version == 2  # not performed
    # The layer itself never turns a performed PUT into 412, even though the response's new
    # ETag differs from If-Match: the method already ran (RFC 9110 §13.1.1).
    assert driver.request(wrapped, "PUT", headers=[("If-Match", '"v2"')]).headers["etag"] == '"v3"'


def test_check_preconditions_outside_a_request_says_what_to_do() -> None:
    with pytest.raises(scalekit.ScalekitError, match="CDN layer"):
        contextvars.Context().run(check_preconditions, etag='"x"')  # no request context here


# --------------------------------------------------------------------------- WSGI specifics


def test_wsgi_write_callable_is_stamped_and_streamed() -> None:
    def app_for(calls: list[str]) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            write = start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "5")])
            write(b"hello")
            return []
        return app

    wrapped = Driver("wsgi").wrap(app_for, **PAGE_RULES)
    result = call_wsgi(wrapped, "GET", "/")
    assert result.body == b"hello"
    assert dict(result.headers)["cache-control"] == "public, max-age=0, s-maxage=60"


def test_wsgi_close_is_called_when_answering_304() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"x" * 10

        def close(self) -> None:
            closed.append(True)

    def app_for(calls: list[str]) -> Any:
        def app(environ: dict[str, Any], start_response: Any) -> Body:
            start_response("200 OK", [("Content-Length", "10"), ("ETag", '"e"')])
            return Body()
        return app

    result = call_wsgi(Driver("wsgi").wrap(app_for), "GET", "/", headers=[("If-None-Match", '"e"')])
    assert result.status_code == 304 and closed == [True]


def test_asgi_websocket_scope_passes_through() -> None:
    seen: list[str] = []

    def app_for(calls: list[str]) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])
        return app

    wrapped = Driver("asgi").wrap(app_for)

    async def run() -> None:
        async def receive() -> Any:
            return {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            pass

        await wrapped(asgi_scope(kind="websocket"), receive, send)

    asyncio.run(run())
    assert seen == ["websocket"]


def test_304_keeps_the_cookie_and_stays_private(driver: Driver) -> None:
    reply = Reply(headers=[("Content-Type", "text/html"), ("Set-Cookie", "session=renewed")])
    wrapped = driver.wrap(reply, **PAGE_RULES)
    etag = driver.request(wrapped).headers["etag"]
    result = driver.request(wrapped, headers=[("If-None-Match", etag)])
    assert result.status == 304
    assert result.headers["set-cookie"] == "session=renewed"
    assert result.headers["cache-control"] == "private, max-age=0"


def test_412_is_not_counted_as_a_304(driver: Driver) -> None:
    wrapped = driver.wrap(Reply())
    before = metric("scalekit_cdn_not_modified_total")
    assert driver.request(wrapped, headers=[("If-Match", '"stale"')]).status == 412
    assert metric("scalekit_cdn_not_modified_total") == before


def test_asgi_pathsend_after_a_buffered_start_passes_through() -> None:
    """A file sent with pathsend cannot be hashed: the start leaves unchanged, then the file."""
    messages = [{"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]},
                {"type": "http.response.pathsend", "path": "/etc/hostname"}]

    def app_for(calls: list[str]) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            for message in messages:
                await send(message)
        return app

    result = call_asgi(Driver("asgi").wrap(app_for), asgi_scope(extensions={"http.response.pathsend": {}}))
    assert [m["type"] for m in result.sent] == ["http.response.start", "http.response.pathsend"]
    assert result.sent[0] is messages[0] and result.sent[1] is messages[1]


def test_asgi_header_names_are_read_in_any_case_and_the_name_memo_is_bounded(monkeypatch: Any) -> None:
    from scalekit.cdn import asgi_shell

    names = asgi_shell._FieldNames()
    monkeypatch.setattr(asgi_shell, "_FIELD_NAMES", names)
    monkeypatch.setattr(asgi_shell._FieldNames, "MAX_NAMES", 3)
    body = b"<h1>hello</h1>"

    def app_for(calls: list[str]) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"Content-Type", b"text/html"), (b"Set-Cookie", b"session=1"), (b"x-" + b"n" * 80, b"long"),
                (b"Content-Length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        return app

    driver = Driver("asgi")
    wrapped = driver.wrap(app_for, **PAGE_RULES)
    for _ in range(2):
        result = driver.request(wrapped)
        # Set-Cookie read whatever its case: the page rule's lifetime is not stamped shared.
        assert result.headers["cache-control"] == "private, max-age=0"
        assert result.headers["etag"] == body_etag(body)
    assert len(names) == 3 and all(len(name) <= names.MAX_NAME_BYTES for name in names)
    assert names[b"X-Other"] == "x-other" and b"X-Other" not in names
