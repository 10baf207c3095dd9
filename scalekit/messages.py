"""Plain response values that layers compute and drivers send (no I/O here).

>>> response = simple_response(503, "pool exhausted\n", retry_after_seconds=1)
>>> response.status, dict(response.headers)["retry-after"]
(503, '1')
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["Response", "simple_response", "status_line"]

_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def status_line(status: int) -> str:
    """The WSGI status string for ``status`` (``"404 Not Found"``)."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"{status} Unknown"


@dataclass(frozen=True, slots=True)
class Response:
    """A whole response decided by a layer (a cache hit, a 304, a 503): status, headers, body.

    Header names are lower-case, values are latin-1 text, as HTTP/2 and ASGI carry them.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


def simple_response(
    status: int,
    text: str,
    *,
    content_type: str = "text/plain; charset=utf-8",
    retry_after_seconds: int | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """A short uncacheable text response, for errors a layer answers itself."""
    body = text.encode("utf-8")
    headers: list[tuple[str, str]] = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
    ]
    if retry_after_seconds is not None:
        headers.append(("retry-after", str(retry_after_seconds)))
    headers.extend(extra_headers)
    return Response(status, tuple(headers), body)
