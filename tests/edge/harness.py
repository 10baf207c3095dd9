"""Wrapped apps with edge purges for the tests, and the machine's Redis under a prefix of
their own (removed afterwards)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import scalekit

REDIS_URL = "redis://127.0.0.1:6379/0"

# Short waits so tests see retries and reclaims quickly (correctness, not speed, is asserted).
FAST = {"settle_seconds": 0.02, "retry_min_seconds": 0.05, "retry_max_seconds": 0.5,
        "reclaim_after_seconds": 1.0}


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis on 127.0.0.1:6379 is not reachable: {error}")
    return client


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix nobody else uses; its keys are deleted at the end."""
    client = redis_or_skip()
    prefix = f"sk-edge-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            client.delete(key)
        client.close()


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A page for GET, 200 for anything else (an unsafe method that succeeded)."""
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("content-type", "text/plain"), ("content-length", str(len(body))),
                              ("cache-control", "public, s-maxage=60")])
    return [body]


def wrapped(targets: dict[str, dict[str, Any]], *, dialect: str, state_dir: Path,
            prefix: str | None, purge: dict[str, Any] | None = None, **settings: Any) -> Any:
    """``hello`` wrapped with purges to ``targets`` (Redis under ``prefix``, or none)."""
    settings.setdefault("redis", {"url": REDIS_URL, "key_prefix": prefix} if prefix is not None else {})
    return scalekit.wrap(
        hello, state_dir=str(state_dir), metrics=False,
        cdn={"surrogate_keys": dialect, "purge": {**FAST, **(purge or {}), "targets": targets}},
        **settings)


def call(app: Any, method: str, path: str, host: str = "shop.example") -> int:
    """One request straight to the WSGI app; its status code."""
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_NAME": host, "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "HTTP_HOST": host, "wsgi.url_scheme": "http", "wsgi.input": __import__("io").BytesIO(b""),
               "REMOTE_ADDR": "127.0.0.1"}
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return int(statuses[0].split()[0])
