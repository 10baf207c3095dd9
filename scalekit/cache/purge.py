"""The HTTP purge endpoint: invalidate tags over HTTP, only with the configured bearer token.

Hooking it into the cache layer (scalekit/cache/layer.py), before any cache lookup::

    purge = PurgeEndpoint(runtime)                  # once, at wrap time
    # WSGI shell:
    response = purge.handle_wsgi(environ)           # None: not a purge request, carry on
    if response is not None:
        return wsgi.send_response(start_response, response)
    # ASGI shell (http scopes):
    response = await purge.handle_asgi(scope)
    if response is not None:
        await asgi.send_response(send, response); return

The endpoint exists only when ``cache.invalidation.purge_token`` is set; otherwise every
request passes through untouched (the app answers that path like any other). A purge is
``POST`` or ``PURGE`` on ``cache.invalidation.purge_path`` with ``Authorization: Bearer
<token>``, naming tags as ``?tag=a&tag=b`` and/or a ``Surrogate-Key: a b`` request header.
Without a valid token the answer is 401: nothing a client sends on an ordinary request (no
``Cache-Control``, ``Pragma`` or custom header) ever invalidates anything. Answers are
``no-store`` JSON and never cached, and say how far the purge reached: 200 only when the fleet
has it (Redis, or without Redis the host's generations file) — ``"acknowledged"`` then tells
whether every live instance had applied it; 202 when only this process has it and it is queued
for the fleet; 503 with ``Retry-After`` when only this process has it and nothing will carry it
further (purge again).

:func:`purge_request` is the pure decision; :class:`PurgeEndpoint` adds the invalidation.

>>> decide = PurgePolicy(path="/_purge", token="s3cret-token-0123456789")
>>> decide.purge_request("POST", "/_purge", "tag=a&tag=b", None, None).status
401
>>> decide.purge_request("POST", "/_purge", "tag=a&tag=b", "Bearer s3cret-token-0123456789", None)
Purge(tags=('a', 'b'))
>>> decide.purge_request("GET", "/elsewhere", "", None, None) is None
True
"""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .. import asgi
from ..headers import parse_tags
from ..messages import Response, simple_response
from .invalidation import InvalidationResult

__all__ = ["Purge", "PurgeEndpoint", "PurgePolicy", "purge_request"]

PURGE_METHODS = frozenset({"POST", "PURGE"})
MAX_TAGS = 1000


@dataclass(frozen=True, slots=True)
class Purge:
    """The decision to invalidate ``tags`` (then answer 200)."""

    tags: tuple[str, ...]


class PurgePolicy:
    """Pure purge decisions, precomputed from the configured path and token."""

    def __init__(self, *, path: str, token: str | None) -> None:
        self.path = path
        self.token = token.encode("utf-8") if token else None

    def purge_request(
        self,
        method: str,
        path: str,
        query_string: str,
        authorization: str | None,
        surrogate_key: str | None,
    ) -> Response | Purge | None:
        """None: not for us. A Response: refuse (401/405/400). Purge: invalidate its tags."""
        if self.token is None or path != self.path:
            return None
        if not self._is_authorized(authorization):
            # RFC 6750 §3: a protected resource answers 401 with a Bearer challenge.
            return simple_response(401, "purging requires a bearer token\n",
                                   extra_headers=(("www-authenticate", 'Bearer realm="purge"'),))
        if method not in PURGE_METHODS:
            return simple_response(405, "purge with POST or PURGE\n",
                                   extra_headers=(("allow", "POST, PURGE"),))
        tags = _tags_of(query_string, surrogate_key)
        if not tags:
            return simple_response(400, "name the tags to purge: ?tag=T&tag=T2 or Surrogate-Key: T T2\n")
        if len(tags) > MAX_TAGS:
            return simple_response(400, f"at most {MAX_TAGS} tags per purge request\n")
        return Purge(tags)

    def _is_authorized(self, authorization: str | None) -> bool:
        if not authorization or self.token is None:
            return False
        scheme, _, credentials = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode("utf-8", "replace"), self.token)


def purge_request(method: str, path: str, authorization: str | None, *, purge_path: str,
                  token: str | None, query_string: str = "",
                  surrogate_key: str | None = None) -> Response | Purge | None:
    """One-shot form of :meth:`PurgePolicy.purge_request` (tests, other shells)."""
    return PurgePolicy(path=purge_path, token=token).purge_request(
        method, path, query_string, authorization, surrogate_key)


def _tags_of(query_string: str, surrogate_key: str | None) -> tuple[str, ...]:
    tags: dict[str, None] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=False):
        if name == "tag" and value.strip():
            tags.setdefault(value.strip(), None)
    for tag in parse_tags(surrogate_key, None):
        tags.setdefault(tag, None)
    return tuple(tags)


def purged_response(tags: tuple[str, ...], result: InvalidationResult | None = None, *,
                    retry_after_seconds: int = 1) -> Response:
    """The answer to a purge: 200 when the fleet has it, 202 queued, 503 this process only."""
    if result is None:
        result = InvalidationResult(tags=tags, reach="fleet", acknowledged=True)
    document = {"purged": list(tags), "reach": result.reach, "acknowledged": result.acknowledged,
                "unacknowledged": list(result.unacknowledged), "queued": result.queued,
                "detail": result.describe()}
    body = (json.dumps(document) + "\n").encode("utf-8")
    headers: tuple[tuple[str, str], ...] = (
        ("content-type", "application/json"), ("content-length", str(len(body))),
        ("cache-control", "no-store"))
    if result.reached_fleet:
        status = 200
    elif result.queued:
        status = 202
    else:
        status = 503
        headers += (("retry-after", str(retry_after_seconds)),)
    return Response(status, headers, body)


class PurgeEndpoint:
    """The purge endpoint of one runtime: decision plus ``runtime.invalidate(source="http")``."""

    def __init__(self, runtime: Any) -> None:
        invalidation = runtime.config.cache.invalidation
        self.runtime = runtime
        self.policy = PurgePolicy(path=invalidation.purge_path, token=invalidation.purge_token)
        self.enabled = self.policy.token is not None
        self.retry_after_seconds = max(1, math.ceil(runtime.config.redis.circuit_cool_down_seconds))

    def handle_wsgi(self, environ: dict[str, Any]) -> Response | None:
        """The response to send for a purge request, or None to carry on."""
        if not self.enabled or environ.get("PATH_INFO") != self.policy.path:
            return None
        decision = self.policy.purge_request(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""), environ.get("HTTP_AUTHORIZATION"),
            environ.get("HTTP_SURROGATE_KEY"))
        if isinstance(decision, Purge):
            result = self.runtime.invalidate(decision.tags, source="http")
            return purged_response(decision.tags, result, retry_after_seconds=self.retry_after_seconds)
        return decision

    async def handle_asgi(self, scope: dict[str, Any]) -> Response | None:
        if not self.enabled or scope.get("path") != self.policy.path:
            return None
        decision = self.policy.purge_request(
            scope.get("method", "GET"), scope.get("path", ""),
            scope.get("query_string", b"").decode("latin-1"),
            asgi.header_value(scope, b"authorization"), asgi.header_value(scope, b"surrogate-key"))
        if isinstance(decision, Purge):
            result = await self.runtime.ainvalidate(decision.tags, source="http")
            return purged_response(decision.tags, result, retry_after_seconds=self.retry_after_seconds)
        return decision
