"""Purge calls as plain values: what to send, what came back, and what that means.

Vendors (:mod:`.vendors`) turn a batch of tags or URLs into :class:`Call` values; the
transport sends them and hands back a :class:`Reply`; :func:`judge` decides, without I/O,
whether the purge is done (:class:`Accepted`), must be sent again later (:class:`Retry`, with
the wait the vendor asked for) or can never succeed as it is (:class:`Rejected`).

>>> judge(Reply(status=429, headers={"retry-after": "7"}), now=0.0)
Retry(reason='HTTP 429', after_seconds=7.0, slow=False)
>>> judge(Reply(status=200, headers={}), now=0.0)
Accepted()
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Accepted",
    "Call",
    "Outcome",
    "Rejected",
    "Reply",
    "Retry",
    "batches",
    "judge",
    "retry_after_seconds",
]

# Akamai's 429 page: "Wait five seconds, then retry"; used when a 429 names no wait at all.
DEFAULT_RATE_LIMIT_WAIT_SECONDS = 5.0
# Longest reply body text kept for a reason (a vendor's error message, never a header).
_REASON_BODY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request that purges ``items`` (queue items: ``t:<tag>`` / ``u:<url>``).

    ``connect_to`` is an address to connect to instead of the URL's host (one Varnish
    instance among those a name resolves to); the Host header still names the URL's host.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    items: tuple[str, ...] = ()
    connect_to: str | None = None

    def __repr__(self) -> str:
        # Headers carry credentials (Fastly-Key, Authorization): never in a repr.
        where = f" via {self.connect_to}" if self.connect_to else ""
        return f"Call({self.method} {self.url}{where}, {len(self.items)} item(s))"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the edge answered: status, headers with lower-case names, body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The edge took the purge."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Send again later: after ``after_seconds`` if the edge said (429, Retry-After), else
    after the next backoff step. ``slow``: a configuration problem (credentials refused, an
    unknown service) that only an operator fixes: retried at the longest backoff."""

    reason: str
    after_seconds: float | None = None
    slow: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """The edge refused the request itself (400, 413, 422): sending it again cannot help."""

    reason: str


Outcome = Accepted | Retry | Rejected


def retry_after_seconds(headers: Mapping[str, str], *, now: float) -> float | None:
    """The wait a reply asks for: ``Retry-After`` (RFC 9110 §10.2.3: seconds or an HTTP-date),
    else Fastly's ``Fastly-RateLimit-Reset`` (Unix time the limit resets); None if neither
    parses. Never negative.

    >>> retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> retry_after_seconds({"fastly-ratelimit-reset": "1445412490"}, now=1445412480.0)
    10.0
    """
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    if value:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return max(0.0, moment.timestamp() - now)
    reset = headers.get("fastly-ratelimit-reset", "").strip()
    if reset.isdigit():
        return max(0.0, float(reset) - now)
    return None


def judge(reply: Reply, *, now: float) -> Outcome:
    """What ``reply`` means for the purge (the same rules for every vendor)."""
    status = reply.status
    if 200 <= status < 300:
        if _says_failure(reply.body):
            return Rejected(_reason(reply))
        return Accepted()
    wait = retry_after_seconds(reply.headers, now=now)
    if status == 429:
        return Retry(_reason(reply), DEFAULT_RATE_LIMIT_WAIT_SECONDS if wait is None else wait)
    if status in (408, 425) or status >= 500:
        return Retry(_reason(reply), wait)
    if status in (401, 403, 404, 405):
        # Wrong credentials, service, zone or host: the purge stays queued until fixed.
        return Retry(_reason(reply), wait, slow=True)
    return Rejected(_reason(reply))


def _says_failure(body: bytes) -> bool:
    # Cloudflare's envelope: {"success": false, "errors": [...]} means it was not done.
    if not body.startswith(b"{"):
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("success") is False


def _reason(reply: Reply) -> str:
    text = reply.body[:_REASON_BODY_CHARS].decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    return f"HTTP {reply.status}" + (f": {text}" if text else "")


def batches(items: Iterable[str], *, max_count: int, max_bytes: int | None = None,
            size: Callable[[str], int] = len, overhead: int = 0) -> list[list[str]]:
    """``items`` split in order into lists of at most ``max_count`` items whose sizes (plus
    ``overhead`` each, e.g. a separator or JSON quoting) add up to at most ``max_bytes``.
    An item too large for any batch goes alone (the vendor then says what it thinks).

    >>> batches(["a", "b", "c"], max_count=2)
    [['a', 'b'], ['c']]
    >>> batches(["aaa", "bb", "c"], max_count=9, max_bytes=5)
    [['aaa', 'bb'], ['c']]
    """
    out: list[list[str]] = []
    current: list[str] = []
    used = 0
    for item in items:
        cost = size(item) + overhead
        if current and (len(current) >= max_count or (max_bytes is not None and used + cost > max_bytes)):
            out.append(current)
            current, used = [], 0
        current.append(item)
        used += cost
    if current:
        out.append(current)
    return out
