"""What the CDN layer's WSGI and ASGI shells share around one exchange.

Where the request's preconditions are kept for the app (:func:`scalekit.cdn.check_preconditions`
reads them there), and the counting of a 304 and the body bytes it saved.
"""

from __future__ import annotations

from ..messages import Response
from ..metrics.instruments import CDN_BYTES_SAVED, CDN_NOT_MODIFIED
from .respond import body_length

__all__ = ["STATE_KEY", "record_answer"]

# ctx.state[STATE_KEY]: the request's preconditions, read by check_preconditions() in the app.
STATE_KEY = "cdn"


def record_answer(answer: Response, headers: list[tuple[str, str]], body: bytes | None) -> None:
    """Count a 304 and the body bytes it did not send (412s are not savings)."""
    if answer.status != 304:
        return
    CDN_NOT_MODIFIED.inc()
    saved = len(body) if body is not None else (body_length(headers) or 0)
    if saved > 0:
        CDN_BYTES_SAVED.inc(saved)
