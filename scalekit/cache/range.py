"""Range requests answered from a stored complete 200 (RFC 9110 §14): pure selection.

Only a single byte range is served as 206; several ranges get the whole 200, which RFC 9110
§14.2 allows ("A server MAY ignore the Range header field"). An invalid Range is ignored; a
valid one that selects nothing is 416 with ``Content-Range: bytes */length``.

>>> select_range("bytes=0-3", None, etag=None, last_modified=None, length=10)
(0, 4)
>>> select_range("bytes=20-", None, etag=None, last_modified=None, length=10)
'unsatisfiable'
>>> select_range("bytes=0-3", '"old"', etag='"new"', last_modified=None, length=10) is None
True
"""

from __future__ import annotations

from typing import Literal

from werkzeug.http import parse_range_header

from ..headers import parse_http_date

__all__ = ["UNSATISFIABLE", "content_range", "parse_content_range", "select_range"]

UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"


def _if_range_holds(if_range: str, etag: str | None, last_modified: str | None) -> bool:
    # RFC 9110 §13.1.5: "If the validator given in the If-Range header field matches the
    # current validator for the selected representation ... the server SHOULD process the
    # Range header field". Entity tags compare strongly: a weak tag never matches; a date
    # matches only the exact Last-Modified.
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return etag is not None and not etag.startswith("W/") and value == etag.strip()
    since = parse_http_date(value)
    return since is not None and since == parse_http_date(last_modified)


def select_range(
    range_header: str | None,
    if_range: str | None,
    *,
    etag: str | None,
    last_modified: str | None,
    length: int,
) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, stop)`` for a 206, ``"unsatisfiable"`` for a 416, or None for the full 200."""
    if not range_header:
        return None
    if if_range is not None and not _if_range_holds(if_range, etag, last_modified):
        return None
    parsed = parse_range_header(range_header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    start = parsed.ranges[0][0]
    if start < 0 and length > 0:
        # §14.1.2: "If the selected representation is shorter than the specified suffix-length,
        # the entire representation is used" (werkzeug would call that unsatisfiable).
        return max(0, length + start), length
    selected = parsed.range_for_length(length)
    if selected is None:
        return UNSATISFIABLE
    return selected


def content_range(start: int, stop: int, length: int) -> str:
    """``bytes start-last/length`` (RFC 9110 §14.4)."""
    return f"bytes {start}-{stop - 1}/{length}"


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``(start, stop, complete length)`` of a single-part ``bytes first-last/length``, or None.

    RFC 9110 §14.4: ``bytes 0-499/1234`` covers bytes 0 to 499 inclusive, so ``stop`` is 500. A
    unit other than bytes (§14.4: "the recipient MUST NOT attempt to recombine it"), an unknown
    length (``*``), a last before the first or past the length are all None.
    """
    if not value:
        return None
    unit, _, spec = value.strip().partition(" ")
    span, _, length_text = spec.partition("/")
    first_text, dash, last_text = span.partition("-")
    if unit.lower() != "bytes" or not dash:
        return None
    numbers = (first_text, last_text, length_text)
    if not all(text.isascii() and text.isdigit() for text in numbers):
        return None
    first, last, length = (int(text) for text in numbers)
    if first > last or last >= length:
        return None
    return first, last + 1, length
