"""A scripted origin behind the cache, as a WSGI and an ASGI app sharing one pure core.

The query string scripts the response, so one app serves every scenario in-process and under
real servers: ``cc`` (Cache-Control), ``sc`` (Surrogate-Control), ``cdn`` (CDN-Cache-Control),
``vary``, ``status``,
``etag=1`` (a tag that changes with the resource's version), ``lm=1`` (fixed Last-Modified),
``expires``, ``age`` (an upstream Age), ``cookie=1`` (Set-Cookie), ``tag`` (Surrogate-Key), ``rule=TTL`` (the app calls
``cache_response``), ``size=N`` (N-byte body), ``sleep=MS``, ``location``, ``partial=1``,
``ranges=1`` (a single byte Range is answered with 206).
The body names the path, how many times the origin ran for it, the version, and the Vary'd
request header values, so a test can tell exactly which origin response it got.

Control endpoints (outside the cache, handled by :func:`control_wsgi` / :func:`control_asgi`):
``/__calls?path=P``, ``POST /__advance?s=N`` (the injected clock), ``POST /__fail?mode=500|raise|``
and ``POST /__bump?path=P`` (new version without going through the cache).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from werkzeug.http import parse_range_header

from scalekit.asgi import ASGIRoot
from scalekit.cache import layer
from scalekit.cache.rules import cache_response
from scalekit.config import load_config
from scalekit.headers import format_http_date
from scalekit.runtime import Runtime
from scalekit.wsgi import WSGIRoot

START_TIME = 1_700_000_000.0
LAST_MODIFIED = "Mon, 13 Nov 2023 22:13:20 GMT"
ALLOWED_HOSTS = ("localhost", "127.0.0.1", "test", "testserver", ".example.com")


class FakeClock:
    """The runtime's wall clock, advanced by tests (never by sleeping)."""

    def __init__(self, start: float = START_TIME) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Origin:
    """Per-path call counts and versions, and a switch that makes the origin fail. Like any
    origin with a clock (RFC 9110 §6.6.1), it sends Date, from the injected clock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.failing: str = ""
        self.gate: threading.Event | None = None  # in-process tests hold responses here

    def respond(self, method: str, path: str, query: str, header: Callable[[str], str | None]
                ) -> tuple[int, list[tuple[str, str]], bytes, float]:
        """(status, headers, body, seconds to sleep first) for one request."""
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        with self.lock:
            count = self.calls[path] = self.calls.get(path, 0) + 1
            if method not in ("GET", "HEAD"):
                self.versions[path] = self.versions.get(path, 1) + 1
            version = self.versions.setdefault(path, 1)
            failing = self.failing
        if failing == "raise" and method in ("GET", "HEAD"):
            raise RuntimeError("origin failure (scripted)")
        if failing == "500" and method in ("GET", "HEAD"):
            return 500, [("content-type", "text/plain")], b"origin down", 0.0
        if "rule" in params:
            cache_response(float(params["rule"]), tags=[f"path:{path}"])
        headers: list[tuple[str, str]] = [("content-type", "text/plain")]
        if self.clock is not None:
            headers.append(("date", format_http_date(self.clock())))
        for param, name in (("cc", "cache-control"), ("sc", "surrogate-control"), ("vary", "vary"),
                            ("cdn", "cdn-cache-control"),
                            ("expires", "expires"), ("tag", "surrogate-key"), ("location", "location"),
                            ("age", "age")):
            if param in params:
                headers.append((name, params[param]))
        if header("x-origin-location") is not None:
            headers.append(("location", header("x-origin-location") or ""))
        etag = f'"{path.strip("/").replace("/", "-") or "root"}-v{version}"'
        if "etag" in params:
            headers.append(("etag", etag))
        if "lm" in params:
            headers.append(("last-modified", LAST_MODIFIED))
        if "cookie" in params:
            headers.append(("set-cookie", f"session={count}"))
        vary_values = " ".join(f"{name}={header(name.strip().lower())}"
                               for name in params.get("vary", "").split(",") if name.strip())
        body = f"{path} call={count} version={version} {vary_values}".strip().encode()
        if "size" in params:
            body = (body + b" " + b"x" * int(params["size"]))[: int(params["size"])]
        status = int(params.get("status", "200"))
        if "ranges" in params and header("range") and status == 200:
            # Honour a single byte range, as a real origin would (RFC 9110 §14.2).
            selected = parse_range_header(header("range"))
            span = selected.range_for_length(len(body)) if selected and len(selected.ranges) == 1 else None
            if span is not None:
                status = 206
                headers.append(("content-range", f"bytes {span[0]}-{span[1] - 1}/{len(body)}"))
                body = body[span[0]:span[1]]
        if "partial" in params:
            status = 206
            headers.append(("content-range", f"bytes 0-{len(body) - 1}/{len(body) + 10}"))
        inm = header("if-none-match")
        if status == 200 and "etag" in params and inm is not None and etag in inm:
            return 304, [h for h in headers if h[0] != "content-type"], b"", float(params.get("sleep", 0)) / 1000
        headers.append(("content-length", str(len(body))))
        return status, headers, b"" if method == "HEAD" else body, float(params.get("sleep", 0)) / 1000


def make_runtime(clock: FakeClock, redis: dict[str, Any] | None = None, **cache: Any) -> Runtime:
    settings: dict[str, Any] = {"disk": {"enabled": False}, **cache}
    sections: dict[str, Any] = {"cache": settings, "cdn": {"enabled": False}, "allowed_hosts": ALLOWED_HOSTS}
    if redis is not None:
        sections["redis"] = redis
    config = load_config(sections, environ={}, cwd="/nonexistent")
    return Runtime(config, clock=clock)


def origin_wsgi(origin: Origin) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, headers, body, delay = origin.respond(
            environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
            lambda name: environ.get("HTTP_" + name.upper().replace("-", "_")))
        if origin.gate is not None:
            origin.gate.wait(10)
        if delay:
            time.sleep(delay)
        start_response(f"{status} X", headers)
        return [body]
    return app


def origin_asgi(origin: Origin) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status, out, body, delay = origin.respond(scope["method"], scope["path"],
                                                  scope["query_string"].decode(), headers.get)
        while origin.gate is not None and not origin.gate.is_set():
            await asyncio.sleep(0.005)
        if delay:
            await asyncio.sleep(delay)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in out]})
        await send({"type": "http.response.body", "body": body})
    return app


def control(origin: Origin, clock: FakeClock, method: str, path: str, query: str) -> bytes | None:
    """Answer a control endpoint, or None for an ordinary request."""
    if not path.startswith("/__"):
        return None
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if path == "/__calls":
        return json.dumps(origin.calls.get(params["path"], 0)).encode()
    if path == "/__advance":
        clock.advance(float(params["s"]))
    elif path == "/__fail":
        origin.failing = params.get("mode", "")
    elif path == "/__bump":
        with origin.lock:
            origin.versions[params["path"]] = origin.versions.get(params["path"], 1) + 1
    return b"ok"


def build_wsgi(origin: Origin, clock: FakeClock, redis: dict[str, Any] | None = None,
               **cache: Any) -> tuple[Any, Runtime]:
    runtime = make_runtime(clock, redis, **cache)
    inner = origin_wsgi(origin)
    wrapped = WSGIRoot(inner, layer.wrap_wsgi(inner, runtime), runtime)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        answer = control(origin, clock, environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                         environ.get("QUERY_STRING", ""))
        if answer is not None:
            start_response("200 OK", [("content-type", "application/json")])
            return [answer]
        return wrapped(environ, start_response)
    return app, runtime


def build_asgi(origin: Origin, clock: FakeClock, redis: dict[str, Any] | None = None,
               **cache: Any) -> tuple[Any, Runtime]:
    runtime = make_runtime(clock, redis, **cache)
    inner = origin_asgi(origin)
    wrapped = ASGIRoot(inner, layer.wrap_asgi(inner, runtime), runtime)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            answer = control(origin, clock, scope["method"], scope["path"], scope["query_string"].decode())
            if answer is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": answer})
                return
        await wrapped(scope, receive, send)
    return app, runtime


# Module-level apps for real servers (one origin and clock per server process).
_server_clock = FakeClock()
_server_origin = Origin(_server_clock)
wsgi_app, _ = build_wsgi(_server_origin, _server_clock, coalesce_timeout_seconds=20.0)
asgi_app, _ = build_asgi(_server_origin, _server_clock, coalesce_timeout_seconds=20.0)
