"""The CDN layer's per-request steps after stamping, pure: body buffering, ETag, 304 / 412.

Both shells (:mod:`scalekit.cdn.wsgi_shell` and :mod:`scalekit.cdn.asgi_shell`) call these with plain values.

Conditional requests are answered here for GET and HEAD only. For a safe method the selected
representation *is* the response the app just produced, and producing it changed nothing
(RFC 9110 §9.2.1), so evaluating RFC 9110 §13.2.2 on its ETag / Last-Modified is exact: 304
for If-None-Match / If-Modified-Since, 412 for a failing If-Match / If-Unmodified-Since.

Unsafe methods are left to the app, deliberately. RFC 9110 §13.1.1: "An origin server that
receives an If-Match header field MUST evaluate the condition as per Section 13.2 prior to
performing the method", and must not perform it when the condition is false. A middleware
learns the current validator only from the app's response, after the method has run; turning
that response into a 412 would report a failure for a change that was made. Fetching the
validator first with an internal GET (or from a cached entry) and then calling the app is a
check-then-act race: another writer can change the resource in between, which is exactly the
lost update If-Match exists to prevent, and a cached validator may simply be stale. Only the
app, inside its own transaction, knows the current state, so it evaluates there with
:func:`scalekit.cdn.check_preconditions` (the same :func:`~scalekit.conditional.evaluate_preconditions`),
and the layer passes its answer through untouched.
"""

from __future__ import annotations

from ..conditional import evaluate_preconditions, not_modified_headers
from ..messages import Response, simple_response
from .etag import body_etag
from .policy import SAFE_METHODS

__all__ = [
    "Preconditions",
    "answer_conditional",
    "body_length",
    "buffer_limit",
    "with_etag",
]

# (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since), None when absent.
Preconditions = tuple[str | None, str | None, str | None, str | None]
PRECONDITION_FIELDS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def body_length(headers: list[tuple[str, str]]) -> int | None:
    """The declared Content-Length, or None when absent or unreadable."""
    for name, value in headers:
        if name == "content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return None


def buffer_limit(content_length: int | None, max_bytes: int) -> int | None:
    """How many body bytes to buffer for the ETag: the Content-Length when within ``max_bytes``.

    Without a Content-Length the body streams untouched: it may be a long-lived stream (server
    sent events) whose first bytes must not wait for a limit that is never reached.
    """
    return content_length if content_length is not None and content_length <= max_bytes else None


def with_etag(headers: list[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
    """``headers`` plus the strong ETag of ``body`` (computed once; the cache layer stores it)."""
    headers.append(("etag", body_etag(body)))
    return headers


def answer_conditional(method: str, preconditions: Preconditions | None, status: int,
                       headers: list[tuple[str, str]]) -> Response | None:
    """The 304 or 412 answering a conditional GET/HEAD, or None to send the response.

    Only 200 responses are evaluated: RFC 9110 §13.2.1 "A server MUST ignore all received
    preconditions if its response to the same request without those conditions ... would have
    been a status code other than a 2xx (Successful) or 412", and the other 2xx of a GET
    (206 from a Range the app handled, 203) are not what a 304 stands for.
    """
    if preconditions is None or status != 200 or method not in SAFE_METHODS:
        return None
    etag = last_modified = None
    for name, value in headers:
        if name == "etag":
            etag = value
        elif name == "last-modified":
            last_modified = value
    result = evaluate_preconditions(method, *preconditions, etag=etag, last_modified=last_modified)
    if result == 304:
        # RFC 9110 §15.4.5: the validators and cache fields a 200 would carry, no content.
        return Response(304, not_modified_headers(headers))
    if result == 412:
        return simple_response(412, "Precondition Failed: the representation has changed.\n")
    return None


def collect_preconditions(get: dict[str, str]) -> Preconditions | None:
    """The four precondition fields from ``get`` (lower-case name -> value); None if none set."""
    values = (get.get("if-match"), get.get("if-none-match"), get.get("if-modified-since"),
              get.get("if-unmodified-since"))
    return None if values == (None, None, None, None) else values
