"""Stand-ins for the vendors' purge APIs: a local HTTP server that checks every call it gets
against the vendor's documented contract (method, path, authentication, body, per-call limit),
records it, and answers as the vendor does, or with replies a test scripts (429, 500, ...).

A call that breaks the contract is recorded in ``violations`` and answered 400, so a test
fails on the first wrong call instead of passing on a lenient server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "VendorDouble", "akamai_contract", "cloudflare_contract", "fastly_contract",
           "running_double"]


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


Reply = tuple[int, dict[str, str], bytes]
Contract = Callable[[Received], "list[str]"]  # the violations of one call (empty: conforming)


@dataclass
class VendorDouble:
    """The server's state: what arrived, what broke the contract, what to answer next."""

    contract: Contract
    accepted: Callable[[Received], Reply]
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    scripted: list[Reply] = field(default_factory=list)  # answered first, in order
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> Reply:
        with self.lock:
            self.received.append(request)
            problems = self.contract(request)
            if problems:
                self.violations.extend(problems)
                return 400, {"content-type": "application/json"}, json.dumps(problems).encode()
            if self.scripted:
                return self.scripted.pop(0)
        return self.accepted(request)

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_seconds: float = 20.0) -> list[Received]:
        """Poll until ``predicate(received)`` holds (a deadline, not a speed assertion)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            with self.lock:
                snapshot = list(self.received)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.02)
        raise AssertionError(f"not seen within {timeout_seconds} s; received: "
                             f"{[(r.method, r.path) for r in snapshot]}; violations: {self.violations}")


@contextlib.contextmanager
def running_double(double: VendorDouble) -> Iterator[VendorDouble]:
    """Serve ``double`` on 127.0.0.1 (a free port) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Received(self.command, self.path,
                               {name.lower(): value for name, value in self.headers.items()},
                               body, time.monotonic())
            status, headers, payload = double.answer(request)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PURGE = do_PUT = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    double.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()


def _json_body(request: Received, problems: list[str]) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        problems.append(f"content-type is {request.headers.get('content-type')!r}, not application/json")
    try:
        return request.json()
    except ValueError:
        problems.append(f"body is not JSON: {request.body[:80]!r}")
        return None


# --------------------------------------------------------------------------- Fastly


def fastly_contract(*, service_id: str, token: str) -> VendorDouble:
    """Fastly API, "Purging" reference (api.fastly.com): "Purge multiple surrogate key tags" is
    POST /service/{service_id}/purge with a JSON body {"surrogate_keys": [...]}, "Up to 256
    surrogate keys can be purged in one batch request"; "Purge a URL" is POST /purge/{cached_url}
    (host and path, no scheme). Every call authenticates with the Fastly-Key header;
    Fastly-Soft-Purge: 1 makes it soft."""

    def contract(request: Received) -> list[str]:
        problems = []
        if request.method != "POST":
            problems.append(f"method {request.method}, not POST")
        if request.headers.get("fastly-key") != token:
            problems.append("missing or wrong Fastly-Key")
        if "authorization" in request.headers:
            problems.append("Fastly takes Fastly-Key, not Authorization")
        if request.path == f"/service/{service_id}/purge":
            body = _json_body(request, problems)
            keys = body.get("surrogate_keys") if isinstance(body, dict) else None
            if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
                problems.append(f"body is not {{'surrogate_keys': [str, ...]}}: {body!r}")
            elif len(keys) > 256:
                problems.append(f"{len(keys)} surrogate keys in one call; at most 256")
        elif request.path.startswith("/purge/"):
            if request.path.startswith(("/purge/http:", "/purge/https:")):
                problems.append("cached_url carries a scheme")
        else:
            problems.append(f"unknown path {request.path}")
        return problems

    def accepted(request: Received) -> Reply:
        if request.path.startswith("/purge/"):
            return 200, {"content-type": "application/json"}, b'{"status": "ok", "id": "1-2-3"}'
        keys = request.json()["surrogate_keys"]
        return 200, {"content-type": "application/json"}, json.dumps(
            {key: f"id-{index}" for index, key in enumerate(keys)}).encode()

    return VendorDouble(contract, accepted)


# --------------------------------------------------------------------------- Cloudflare


def cloudflare_contract(*, zone_id: str, token: str, max_items: int = 100) -> VendorDouble:
    """Cloudflare API, "Purge Cached Content" (POST /client/v4/zones/{zone_id}/purge_cache)
    with an API token (Authorization: Bearer); "Purge Cached Content by Tag" sends
    {"tags": [...]}, "by URL" {"files": [...]}; the "Purge cache" page's limits: up to 100
    operations per request. One kind of purge per request."""

    def contract(request: Received) -> list[str]:
        problems = []
        if request.method != "POST":
            problems.append(f"method {request.method}, not POST")
        if request.path != f"/client/v4/zones/{zone_id}/purge_cache":
            problems.append(f"unknown path {request.path}")
        if request.headers.get("authorization") != f"Bearer {token}":
            problems.append("missing or wrong Authorization: Bearer token")
        body = _json_body(request, problems)
        if not isinstance(body, dict) or len(body) != 1 or next(iter(body), None) not in ("tags", "files"):
            problems.append(f"body is not {{'tags': [...]}} or {{'files': [...]}}: {body!r}")
            return problems
        values = next(iter(body.values()))
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            problems.append(f"not a list of strings: {values!r}")
        elif len(values) > max_items:
            problems.append(f"{len(values)} items in one call; at most {max_items}")
        if "files" in body and not all(v.startswith(("http://", "https://")) for v in values):
            problems.append("files must be absolute URLs")
        return problems

    def accepted(request: Received) -> Reply:
        return 200, {"content-type": "application/json"}, json.dumps(
            {"success": True, "errors": [], "messages": [], "result": {"id": zone_id}}).encode()

    return VendorDouble(contract, accepted)


# --------------------------------------------------------------------------- Akamai

_EDGEGRID = re.compile(r"^EG1-HMAC-SHA256 client_token=([^;]+);access_token=([^;]+);"
                       r"timestamp=(\d{8}T\d\d:\d\d:\d\d\+0000);nonce=([^;]+);signature=([A-Za-z0-9+/=]+)$")


def _edgegrid_signature(*, secret: str, timestamp: str, data: str) -> str:
    """The specification's two HMACs, written here afresh so the check does not reuse the code
    it checks."""
    key = base64.b64encode(hmac.new(secret.encode(), timestamp.encode(), hashlib.sha256).digest())
    return base64.b64encode(hmac.new(key, data.encode(), hashlib.sha256).digest()).decode()


def akamai_contract(*, client_token: str, client_secret: str, access_token: str,
                    network: str = "production") -> VendorDouble:
    """Akamai Fast Purge API v3: "Invalidate by cache tag" is POST
    /ccu/v3/invalidate/tag/{network}, "Invalidate by URL or ARL" POST
    /ccu/v3/invalidate/url/{network}, each with {"objects": [...]}; "Purge requests have a
    body size limit of 50KB" (413 above 50,000 bytes); a cache tag is at most 128 characters;
    authentication is EdgeGrid ("Authenticate with EdgeGrid": EG1-HMAC-SHA256 over method,
    scheme, host, path, signed headers, the body's SHA-256 and the unsigned header, keyed by
    HMAC(client_secret, timestamp)). Each nonce is used once."""
    nonces: set[str] = set()

    def contract(request: Received) -> list[str]:
        problems = []
        if request.method != "POST":
            problems.append(f"method {request.method}, not POST")
        match = re.fullmatch(rf"/ccu/v3/invalidate/(tag|url)/{network}", request.path)
        if match is None:
            problems.append(f"unknown path {request.path}")
        if len(request.body) > 50_000:
            problems.append(f"body of {len(request.body)} bytes; at most 50,000")
        body = _json_body(request, problems)
        objects = body.get("objects") if isinstance(body, dict) else None
        if not isinstance(objects, list) or not objects or not all(isinstance(o, str) for o in objects):
            problems.append(f"body is not {{'objects': [str, ...]}}: {str(body)[:80]}")
        elif match is not None and match.group(1) == "tag" and any(len(o) > 128 for o in objects):
            problems.append("a cache tag longer than 128 characters")
        auth = _EDGEGRID.match(request.headers.get("authorization", ""))
        if auth is None:
            problems.append("Authorization is not an EG1-HMAC-SHA256 header")
            return problems
        got_client, got_access, timestamp, nonce, signature = auth.groups()
        if (got_client, got_access) != (client_token, access_token):
            problems.append("wrong client_token or access_token")
        if nonce in nonces:
            problems.append("nonce used twice")
        nonces.add(nonce)
        if abs(time.mktime(time.strptime(timestamp, "%Y%m%dT%H:%M:%S+0000")) - time.mktime(time.gmtime())) > 60:
            problems.append(f"timestamp {timestamp} is not now")
        unsigned = request.headers["authorization"].rsplit("signature=", 1)[0]
        content_hash = base64.b64encode(hashlib.sha256(request.body).digest()).decode()
        data = "\t".join(["POST", "http", request.headers.get("host", "").lower(), request.path, "",
                          content_hash, unsigned])
        if not hmac.compare_digest(signature, _edgegrid_signature(secret=client_secret,
                                                                  timestamp=timestamp, data=data)):
            problems.append("EdgeGrid signature does not verify")
        return problems

    def accepted(request: Received) -> Reply:
        return 201, {"content-type": "application/json"}, json.dumps(
            {"httpStatus": 201, "detail": "Request accepted", "estimatedSeconds": 5,
             "purgeId": "e535071c", "supportId": "17PY1321286429616716-211907680"}).encode()

    return VendorDouble(contract, accepted)
