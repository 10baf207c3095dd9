"""A Hypothesis state machine: requests (methods, hosts, queries, Vary'd and conditional
headers, Authorization), scripted origin responses (sent whole or streamed in pieces, server-sent
events among them), unsafe-method and tag invalidations, and clock advances, checked against a
reference model of what the origin produced.

Every origin response carries a serial; the model records, per serial, the request it answered
(key, header values) and what a shared cache may do with it. A reply whose serial is older than
its request came from the cache, and then:

- right variant: its key and its Vary'd request header values equal the current request's;
- nothing private stored: it was storable (not private, no-store, Set-Cookie, unknown Host, Authorization
  without permission, Vary: *) and carries no ``private="..."`` field;
- faithful hits: a fresh hit has the origin's status, body and end-to-end headers, byte for byte;
- invalidation is final (RFC 9111 §4.4): nothing older than an invalidation of its tag or URI is served.

Liveness against the model: repeating a request whose reply said ``stored`` is a hit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from scalekit.asgi import ASGIRoot
from scalekit.cache import layer
from scalekit.cache.rules import cache_response
from scalekit.config import load_config
from scalekit.runtime import Runtime
from scalekit.wsgi import WSGIRoot
from tests.cache.origin_app import FakeClock

PATHS = ("/p0", "/p1", "/p2")
HOSTS = ("a.test", "A.test:80", "x.b.test", "evil.test")
QUERIES = ("", "q=1", "utm_source=z&q=1")
SCRIPTS = {
    "fresh": [("cache-control", "max-age=60")],
    "fresh-etag": [("cache-control", "max-age=60"), ("etag", "VERSION")],
    "public": [("cache-control", "public, max-age=60")],
    "private": [("cache-control", "private, max-age=60")],
    "no-store": [("cache-control", "no-store, max-age=60")],
    "cookie": [("cache-control", "max-age=60"), ("set-cookie", "s=1")],
    "vary": [("cache-control", "max-age=60"), ("vary", "Accept-Language")],
    "vary-star": [("cache-control", "max-age=60"), ("vary", "*")],
    "no-cache": [("cache-control", "no-cache"), ("etag", "VERSION")],
    "private-field": [("cache-control", 'max-age=60, private="x-secret"'), ("x-secret", "1")],
    "rule": [],
    "bad-expires": [("expires", "0"), ("etag", "VERSION")],
    "event-stream": [("cache-control", "max-age=60"), ("content-type", "text/event-stream")],
}
FORBIDDEN_SCRIPTS = {"private", "no-store", "cookie", "vary-star", "event-stream"}
PERMITS_AUTHORIZATION = {"public"}
DROPPED_FROM_COMPARISON = {"age", "cache-status", "content-length", "date", "x-secret"}


@dataclass
class Record:
    """One origin response and the request it answered."""

    key: tuple[str, str, str]
    headers: dict[str, str]
    status: int
    response_headers: list[tuple[str, str]]
    body: bytes
    forbidden: bool
    vary: tuple[str, ...]
    tag: str


@dataclass
class Model:
    serial: int = 0
    records: dict[int, Record] = field(default_factory=dict)
    # The serial counter when a key / a tag was last invalidated.
    key_invalidated: dict[tuple[str, str, str], int] = field(default_factory=dict)
    tag_invalidated: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    scripts: dict[str, str] = field(default_factory=lambda: {p: "fresh" for p in PATHS})
    streamed: set[str] = field(default_factory=set)  # paths whose bodies come in pieces


def model_key(host: str, path: str, query: str) -> tuple[str, str, str]:
    name = host.lower().removesuffix(":80")
    kept = sorted(f"{k}={v}" for k, v in parse_qsl(query, keep_blank_values=True) if not k.startswith("utm_"))
    return name, path, "&".join(kept)


class Origin:
    """The scripted app; each response gets the next serial and is recorded in the model."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def respond(self, method: str, host: str, path: str, query: str,
                headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        model = self.model
        model.serial += 1
        serial = model.serial
        if method in ("POST", "DELETE"):
            model.versions[path] = model.versions.get(path, 0) + 1
            return 204, [("x-serial", str(serial))], b""
        script = model.scripts[path]
        version = f'"{path[1:]}-v{model.versions.get(path, 0)}"'
        out = [(name, version if value == "VERSION" else value) for name, value in SCRIPTS[script]]
        if script == "rule":
            cache_response(30)
        tag = f"tag{path}"
        if not any(name == "content-type" for name, _ in out):
            out.append(("content-type", "text/plain"))
        out += [("x-serial", str(serial)), ("surrogate-key", tag)]
        if headers.get("if-none-match") == version and ("etag", version) in out:
            return 304, out, b""
        body = b"" if method == "HEAD" else f"serial={serial} {path}".encode()
        key = model_key(host, path, query)
        forbidden = (script in FORBIDDEN_SCRIPTS or key[0] == "evil.test"
                     or ("authorization" in headers and script not in PERMITS_AUTHORIZATION))
        vary = ("accept-language",) if script == "vary" else ()
        model.records[serial] = Record(key, dict(headers), 200, list(out), body, forbidden, vary, tag)
        return 200, out, body


def pieces(origin: Origin, path: str, body: bytes) -> list[bytes]:
    """The body as the origin sends it: whole, or in two pieces for a streamed path."""
    if path in origin.model.streamed and body:
        event("streamed response")
        return [body[:5], body[5:]]
    return [body]


def build_app(kind: str, origin: Origin, clock: FakeClock) -> tuple[Any, Runtime]:
    config = load_config({"cache": {"disk": {"enabled": False}, "coalesce": False},
                          "cdn": {"enabled": False}, "allowed_hosts": ("a.test", ".b.test")},
                         environ={}, cwd="/nonexistent")
    runtime = Runtime(config, clock=clock)
    if kind == "wsgi":
        def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
            headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
            status, out, body = origin.respond(environ["REQUEST_METHOD"], environ["HTTP_HOST"],
                                               environ["PATH_INFO"], environ["QUERY_STRING"], headers)
            start_response(f"{status} X", out)
            return iter(pieces(origin, environ["PATH_INFO"], body))
        return WSGIRoot(wsgi_app, layer.wrap_wsgi(wsgi_app, runtime), runtime), runtime

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, out, body = origin.respond(scope["method"], headers["host"], scope["path"],
                                           scope["query_string"].decode(), headers)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in out]})
        parts = pieces(origin, scope["path"], body)
        for number, part in enumerate(parts, 1):
            await send({"type": "http.response.body", "body": part, "more_body": number < len(parts)})
    return ASGIRoot(asgi_app, layer.wrap_asgi(asgi_app, runtime), runtime), runtime


def call(kind: str, app: Any, loop: Any, method: str, host: str, path: str, query: str,
         headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    if kind == "wsgi":
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "SERVER_NAME": "a.test", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                   "HTTP_HOST": host}
        environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
        seen: dict[str, Any] = {}

        def start_response(status: str, out: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = int(status[:3]), out
            return None

        result = app(environ, start_response)
        body = b"".join(result)
        getattr(result, "close", lambda: None)()
        return seen["status"], _combine(seen["headers"]), body
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "scheme": "http", "server": ("a.test", 80),
             "headers": [(b"host", host.encode())] + [(k.encode(), v.encode()) for k, v in headers.items()]}
    loop.run_until_complete(app(scope, receive, send))
    out = [(k.decode(), v.decode()) for k, v in sent[0]["headers"]]
    return sent[0]["status"], _combine(out), b"".join(m.get("body", b"") for m in sent[1:])


def _combine(headers: list[tuple[str, str]]) -> dict[str, str]:
    combined: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        combined[name] = f"{combined[name]}, {value}" if name in combined else value
    return combined


class CacheMachine(RuleBasedStateMachine):
    kind = "wsgi"

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop() if self.kind == "asgi" else None
        self.app, self.runtime = build_app(self.kind, Origin(self.model), self.clock)
        self.last: tuple[Any, ...] | None = None

    def teardown(self) -> None:
        self.runtime.close()
        if self.loop is not None:
            self.loop.close()

    @rule(path=st.sampled_from(PATHS), script=st.sampled_from(sorted(SCRIPTS)))
    def program_origin(self, path: str, script: str) -> None:
        self.model.scripts[path] = script
        self.last = None

    @rule(path=st.sampled_from(PATHS), streamed=st.booleans())
    def stream_origin(self, path: str, streamed: bool) -> None:
        if streamed:
            self.model.streamed.add(path)
        else:
            self.model.streamed.discard(path)
        self.last = None

    @rule(seconds=st.sampled_from([1, 30, 61, 200]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.last = None

    @rule(path=st.sampled_from(PATHS))
    def invalidate_tag(self, path: str) -> None:
        self.model.tag_invalidated[f"tag{path}"] = self.model.serial
        self.runtime.invalidate([f"tag{path}"])
        self.last = None

    @rule(method=st.sampled_from(["POST", "DELETE"]), host=st.sampled_from(HOSTS[:3]),
          path=st.sampled_from(PATHS), query=st.sampled_from(QUERIES))
    def unsafe_request(self, method: str, host: str, path: str, query: str) -> None:
        call(self.kind, self.app, self.loop, method, host, path, query, {})
        # RFC 9111 §4.4: after a non-error response to an unsafe method, the URI is invalidated.
        self.model.key_invalidated[model_key(host, path, query)] = self.model.serial
        self.last = None

    @rule(method=st.sampled_from(["GET", "GET", "HEAD"]), host=st.sampled_from(HOSTS),
          path=st.sampled_from(PATHS), query=st.sampled_from(QUERIES),
          language=st.sampled_from([None, "en", "fr"]),
          conditional=st.sampled_from([None, "current-etag", '"other"']),
          directive=st.sampled_from([None, None, "max-age=0", "only-if-cached", "no-store", "max-stale"]),
          authorization=st.booleans())
    def request(self, method: str, host: str, path: str, query: str, language: str | None,
                conditional: str | None, directive: str | None, authorization: bool) -> None:
        headers: dict[str, str] = {}
        if language:
            headers["accept-language"] = language
        if conditional == "current-etag":
            headers["if-none-match"] = f'"{path[1:]}-v{self.model.versions.get(path, 0)}"'
        elif conditional:
            headers["if-none-match"] = conditional
        if directive:
            headers["cache-control"] = directive
        if authorization:
            headers["authorization"] = "Bearer t"
        before = self.model.serial
        status, reply, body = call(self.kind, self.app, self.loop, method, host, path, query, headers)
        self.check(method, host, path, query, headers, before, status, reply, body)
        self.last = (method, host, path, query, headers, reply)

    @precondition(lambda self: self.last is not None and _stored_fresh(self.last[5]))
    @rule()
    def repeat_stored_request(self) -> None:
        """Liveness: the model says a fresh entry was just stored; the same request is a hit."""
        assert self.last is not None
        method, host, path, query, headers, _ = self.last
        headers = {k: v for k, v in headers.items() if k not in ("cache-control", "if-none-match")}
        before = self.model.serial
        status, reply, body = call(self.kind, self.app, self.loop, method, host, path, query, headers)
        self.check(method, host, path, query, headers, before, status, reply, body)
        assert self.model.serial == before, f"expected a hit, the origin was called: {reply}"
        self.last = None

    def check(self, method: str, host: str, path: str, query: str, headers: dict[str, str],
              before: int, status: int, reply: dict[str, str], body: bytes) -> None:
        assert int(reply.get("age", "0")) >= 0
        serial_text = reply.get("x-serial")
        if serial_text is None or int(serial_text) > before:
            return  # produced by the origin for this very request
        serial = int(serial_text)
        record = self.model.records[serial]
        event("served from cache" + (" (vary)" if record.vary else ""))
        key = model_key(host, path, query)
        # Right variant: same primary key and same Vary'd header values.
        assert record.key == key, (record.key, key)
        for name in record.vary:
            assert record.headers.get(name) == headers.get(name), (name, record.headers, headers)
        # Nothing private stored: never stored if it was not storable; private fields never reused.
        assert not record.forbidden, record
        assert "x-secret" not in reply
        # Invalidation is final (§4.4): nothing older than an invalidation of its URI or tag.
        assert serial > self.model.key_invalidated.get(key, 0)
        assert serial > self.model.tag_invalidated.get(record.tag, 0)
        # Faithful hits: a fresh hit is what the origin sent.
        if status == 200 and method == "GET" and "; hit" in reply.get("cache-status", "") \
                and "ttl=-" not in reply["cache-status"]:
            assert body == record.body
            expected = {(n.lower(), v) for n, v in record.response_headers
                        if n.lower() not in DROPPED_FROM_COMPARISON}
            got = {(n, v) for n, v in reply.items() if n not in DROPPED_FROM_COMPARISON}
            assert got == expected, (got ^ expected)
            event("fresh hit compared byte for byte")



def _stored_fresh(reply: dict[str, str]) -> bool:
    status = reply.get("cache-status", "")
    if "stored" not in status or "ttl=" not in status:
        return False
    return int(status.split("ttl=")[1].split(";")[0]) > 0


class CacheMachineASGI(CacheMachine):
    kind = "asgi"


TestCacheMachineWSGI = CacheMachine.TestCase
TestCacheMachineWSGI.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestCacheMachineASGI = CacheMachineASGI.TestCase
TestCacheMachineASGI.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
