"""The WSGI driver: a wrapped app stays a correct PEP 3333 app, and changes nothing it passes.

Every scenario runs under ``wsgiref.validate.validator`` on both sides: around the app (so the
wrapper behaves as a correct server towards it) and around the wrapper (so it behaves as a
correct app towards the server). Variants: only the metrics layer (``off``: cdn/cache/pool
off) and every default layer; the responses used say ``no-store``, which no layer may alter.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.test import Client

import scalekit
from scalekit.context import CONTEXT_KEY, RequestContext, current
from tests.direct import assert_single_date, call_wsgi, comparable_headers, split_raw

VARIANTS = {
    "metrics only": {"cdn": False, "cache": False, "pool": False},
    "all layers off": {"metrics": False, "cdn": False, "cache": False, "pool": False},
    "defaults": {},
}
NO_STORE = [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]


# Variants whose layers pass the response through as it comes; the default cache layer may
# turn write() calls and a second start_response into one buffered response (PEP 3333 allows it).
PASS_THROUGH = ("metrics only", "all layers off")


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def wrap(variant: str) -> Any:
    """wrap() with one variant's settings, validated on both sides."""
    settings = VARIANTS[variant]

    def wrap_validated(app: Any) -> Any:
        return validator(scalekit.wrap(validator(app), **settings))

    return wrap_validated


class Body:
    """A response iterable that records what happened to it."""

    def __init__(self, chunks: list[bytes], events: list[str], fail_at: int | None = None) -> None:
        self.chunks, self.events, self.fail_at = chunks, events, fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                self.events.append(f"fail {index}")
                raise RuntimeError("body failed")
            self.events.append(f"produce {index}")
            yield chunk

    def close(self) -> None:
        self.closed += 1
        self.events.append("close")


def body_app(body: Body, headers: list[tuple[str, str]] = NO_STORE) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", list(headers))
        return body
    return app


def test_streaming_is_not_buffered(wrap: Any) -> None:
    events: list[str] = []
    body = Body([b"a", b"b", b"c"], events)
    call_wsgi(wrap(body_app(body)), on_chunk=lambda chunk: events.append(f"send {chunk.decode()}"))
    assert events == ["produce 0", "send a", "produce 1", "send b", "produce 2", "send c", "close"]


def test_close_is_called_once_after_a_full_response(wrap: Any) -> None:
    body = Body([b"a"], [])
    assert call_wsgi(wrap(body_app(body))).body == b"a"
    assert body.closed == 1


def test_close_is_called_when_iteration_raises(wrap: Any) -> None:
    events: list[str] = []
    body = Body([b"a", b"b"], events, fail_at=1)
    with pytest.raises(RuntimeError, match="body failed"):
        call_wsgi(wrap(body_app(body)))
    assert events == ["produce 0", "fail 1", "close"]
    assert body.closed == 1


def test_close_is_called_when_the_client_goes_away(wrap: Any) -> None:
    events: list[str] = []
    body = Body([b"a", b"b", b"c"], events)
    result = call_wsgi(wrap(body_app(body)), stop_after=1)
    assert result.chunks == [b"a"]
    assert events == ["produce 0", "close"]
    assert body.closed == 1


def test_generator_body_is_closed_when_abandoned(wrap: Any) -> None:
    finished: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", list(NO_STORE))
        try:
            yield b"a"
            yield b"b"
        finally:
            finished.append("generator closed")

    assert call_wsgi(wrap(app), stop_after=1).chunks == [b"a"]
    assert finished == ["generator closed"]


def test_start_response_with_exc_info_replaces_the_status(wrap: Any, variant: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", list(NO_STORE))
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", list(NO_STORE), sys.exc_info())
        return [b"failed"]

    result = call_wsgi(wrap(app))
    assert result.status == "500 Internal Server Error"
    assert result.body == b"failed"
    if variant in PASS_THROUGH:
        assert result.exc_info is not None and result.exc_info[0] is ValueError


def test_exc_info_after_headers_were_sent_reraises_through_the_wrapper() -> None:
    # PEP 3333: once headers are sent, start_response(..., exc_info) must re-raise; the server
    # does that, and the wrapper must let it through rather than swallow it.
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", list(NO_STORE))
        yield b"first"
        try:
            raise ValueError("after headers")
        except ValueError:
            start_response("500 Internal Server Error", list(NO_STORE), sys.exc_info())
        yield b"never"

    sent: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if exc_info is not None and sent:
            raise exc_info[1].with_traceback(exc_info[2])
        sent.append(status)
        return lambda data: None

    from tests.direct import wsgi_environ
    iterable = scalekit.wrap(app, cdn=False, cache=False, pool=False)(wsgi_environ(), start_response)
    chunks = iter(iterable)
    assert next(chunks) == b"first"
    with pytest.raises(ValueError, match="after headers"):
        next(chunks)
    iterable.close()  # type: ignore[attr-defined]


def test_head_passes_through_like_the_bare_app(wrap: Any, variant: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [*NO_STORE, ("Content-Length", "5")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"hello"]

    bare, wrapped = call_wsgi(validator(app), "HEAD"), call_wsgi(wrap(app), "HEAD")
    assert (wrapped.status, wrapped.body) == (bare.status, b"")
    if variant in PASS_THROUGH:
        assert wrapped.headers == bare.headers
    else:
        assert comparable_headers(wrapped.headers) == comparable_headers(bare.headers)


def test_write_callable_legacy_path(wrap: Any, variant: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", list(NO_STORE))
        write(b"written ")
        return [b"returned"]

    result = call_wsgi(wrap(app))
    assert result.body == b"written returned"
    if variant in PASS_THROUGH:
        assert (result.written, result.chunks) == ([b"written "], [b"returned"])


def test_file_wrapper_body(wrap: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", list(NO_STORE))
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 10000), 4096)

    assert call_wsgi(wrap(app)).body == b"x" * 10000


def test_request_body_and_environ_reach_the_app(wrap: Any) -> None:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen["body"] = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        seen["query"], seen["context"] = environ["QUERY_STRING"], environ.get(CONTEXT_KEY)
        seen["current"] = current()
        start_response("201 Created", list(NO_STORE))
        return [b""]

    result = call_wsgi(wrap(app), "POST", "/items", query="a=1", body=b"payload")
    assert result.status == "201 Created"
    assert seen["body"] == b"payload" and seen["query"] == "a=1"
    assert isinstance(seen["context"], RequestContext) and seen["current"] is seen["context"]


def test_wrapped_app_exception_propagates(wrap: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise KeyError("broken app")

    with pytest.raises(KeyError, match="broken app"):
        call_wsgi(wrap(app))


def test_first_request_runs_startup_hooks_once_across_threads() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", list(NO_STORE))
        return [b"ok"]

    wrapped = scalekit.wrap(app, cdn=False, cache=False, pool=False)
    started: list[int] = []
    gate = threading.Event()

    def hook() -> None:
        gate.wait(5)
        started.append(1)

    wrapped.runtime.on_startup(hook)
    threads = [threading.Thread(target=call_wsgi, args=(wrapped,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(10)
    assert started == [1]
    assert wrapped.runtime.started


# --------------------------------------------------------------------------- Flask


from tests.apps import flask_app

# Responses without Cache-Control may get layer-stamped headers once the CDN layer is real; the
# "defaults" variant compares only responses that say no-store (which no layer may alter).
NOT_LAYER_NEUTRAL = {"/redirect", "/missing", "/boom"}
FLASK_REQUESTS = [
    pytest.param("GET", "/", b"", id="text"),
    pytest.param("GET", "/json", b"", id="json"),
    pytest.param("GET", "/cookies", b"", id="two set-cookie headers"),
    pytest.param("GET", "/redirect", b"", id="redirect"),
    pytest.param("GET", "/status/404", b"", id="404"),
    pytest.param("GET", "/status/503", b"", id="503"),
    pytest.param("GET", "/missing", b"", id="no route"),
    pytest.param("GET", "/boom", b"", id="exception in view"),
    pytest.param("HEAD", "/", b"", id="head"),
    pytest.param("POST", "/echo", b"\x00binary\xffbody", id="post body"),
    pytest.param("GET", "/stream?n=4", b"", id="streamed"),
]


def _exchange(app: Any, method: str, path: str, body: bytes) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    response = Client(app).open(path, method=method, data=body, buffered=False)
    try:
        chunks = list(response.response)
    finally:
        response.close()
    return response.status, list(response.headers.to_wsgi_list()), chunks


def variant_params(requests: list[Any]) -> list[Any]:
    """(variant, method, path, body) for each request; "defaults" only for no-store responses."""
    return [pytest.param(variant, *param.values, id=f"{variant}-{param.id}")
            for variant in ("off", "defaults") for param in requests
            if variant == "off" or param.values[1] not in NOT_LAYER_NEUTRAL]


@pytest.mark.parametrize(("variant", "method", "path", "body"), variant_params(FLASK_REQUESTS))
def test_flask_wrapped_is_byte_for_byte_the_bare_app(variant: str, method: str, path: str, body: bytes) -> None:
    wrapped = getattr(flask_app, f"wrapped_{variant}")
    bare = _exchange(validator(flask_app.app), method, path, body)
    got = _exchange(validator(wrapped), method, path, body)
    if variant == "off":
        assert got == bare
    else:
        assert (got[0], comparable_headers(got[1]), got[2]) == (bare[0], comparable_headers(bare[1]), bare[2])
        assert_single_date(got[1])
    # Flask's own test client agrees with the bare exchange, too.
    with flask_app.app.test_client() as client:
        own = client.open(path, method=method, data=body)
        assert (own.status, own.get_data()) == (bare[0], b"".join(bare[2]))


# --------------------------------------------------------------------------- under gunicorn


@pytest.fixture(scope="module")
def gunicorn_flask() -> Iterator[str]:
    from tests.servers import run_server
    with run_server("gunicorn", "tests.apps.dispatch:flask_variants", extra_args=["--threads", "4"]) as url:
        yield url


@pytest.mark.server
@pytest.mark.parametrize(("variant", "method", "path", "body"), variant_params(FLASK_REQUESTS))
def test_flask_under_gunicorn_is_byte_for_byte_the_bare_app(gunicorn_flask: str, variant: str, method: str,
                                                            path: str, body: bytes) -> None:
    from tests.direct import raw_http, without_date
    bare = raw_http(gunicorn_flask, method, path, headers=[("X-Variant", "bare")], body=body)
    wrapped = raw_http(gunicorn_flask, method, path, headers=[("X-Variant", variant)], body=body)
    assert bare.startswith(b"HTTP/1.1 ")
    if variant == "off":
        assert without_date(wrapped) == without_date(bare)
    else:
        assert_same_semantics(bare, wrapped)


def assert_same_semantics(bare: bytes, wrapped: bytes, *, single_date: bool = True) -> None:
    """Same status line, same body bytes (chunk framing included), same headers up to case,
    grouping and the headers layers may add; Date at most once (uvicorn adds its own Date
    even when the app sent one, so the ASGI tests pass ``single_date=False``)."""
    (bare_status, bare_headers, bare_body), (status, headers, body) = split_raw(bare), split_raw(wrapped)
    assert (status, comparable_headers(headers), body) == (bare_status, comparable_headers(bare_headers), bare_body)
    if single_date:
        assert_single_date(headers)


@pytest.mark.server
@pytest.mark.parametrize("variant", ["bare", "off", "defaults"])
def test_flask_stream_reaches_the_client_before_the_app_finishes(gunicorn_flask: str, variant: str,
                                                                tmp_path: Any) -> None:
    """The second chunk is produced only after the client has read the first one."""
    import httpx
    gate = tmp_path / "gate"
    with httpx.stream("GET", f"{gunicorn_flask}/stream", params={"gate": str(gate), "n": "3"},
                      headers={"X-Variant": variant}, timeout=20) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        gate.touch()
        rest = b"".join(chunks)
    assert first == b"chunk 0\n"
    assert rest == b"chunk 1\nchunk 2\n"
