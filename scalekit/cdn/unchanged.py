"""Which responses the CDN layer leaves as they are, remembered by what its stamp reads.

Most responses leave the layer exactly as they came: the app (or the cache inside) set its own
Cache-Control, nothing is private, an ETag is already there. Stamping one costs a pass over its
lines, a dict of its names and the policy's checks, on every miss; :class:`UnchangedStamps`
remembers the responses :meth:`~scalekit.cdn.policy.Stamper.stamp` gave back unchanged without
an ETag to compute, keyed by everything the stamp reads: the method, the status, the request's
Authorization and Cookie, and the response's lines with the values the stamp never reads left
out (Age, ETag, Content-Length, Cache-Status, Date, Last-Modified: only their presence counts).
A page of a route then differs from the one before it only in those values, and the next one
is known at the cost of one pass building the key. Anything the key cannot cover is stamped as
before: a method some rule matches (rules read the path), tags when surrogate keys are emitted,
and any response whose stamp changes it (it may depend on values the key leaves out).

Bounded like the cache's shape memo: the lines are the app's, and their values may echo a
client's input.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from ..memo import TextMemo
from .policy import Stamper

__all__ = ["UNREAD_VALUES", "UnchangedStamps"]

# Response fields whose values Stamper.stamp never reads, only whether they are present (the
# Content-Length value only for the ETag it would compute, which a remembered response has
# no need of). tests/cdn/test_unchanged.py holds the stamp to it with random values.
UNREAD_VALUES = frozenset({"age", "etag", "content-length", "cache-status", "date", "last-modified"})
# A name in another case keeps its value in the key: correct, only never shared with another
# value. Frameworks write these names lower-case (ASGI) or as below (werkzeug, Django).
_SPELLINGS = UNREAD_VALUES | {name.title() for name in UNREAD_VALUES} | {"ETag"}

# method, status, the request's Authorization and Cookie, the lines with the unread values left out
Key = tuple[str, Any, bool, bool, tuple[tuple[Any, Any], ...]]


class UnchangedStamps:
    """Responses the stamper leaves unchanged with no ETag to add, for one layer's stamper;
    ``encoded``: the lines are ASGI's (bytes), else WSGI's (str)."""

    __slots__ = ("_dialect", "_memo", "_rule_methods", "_unread")

    def __init__(self, stamper: Stamper, *, encoded: bool, max_entries: int = 256,
                 max_text_chars: int = 2048) -> None:
        self._unread: Collection[Any] = frozenset(
            name.encode("latin-1") for name in _SPELLINGS) if encoded else _SPELLINGS
        self._rule_methods = stamper.rule_methods
        self._dialect = stamper.dialect
        self._memo: TextMemo[bool] = TextMemo(max_entries=max_entries, max_text_chars=max_text_chars)

    def key(self, method: str, status: Any, has_authorization: bool, has_cookie: bool,
            tags: Collection[str], lines: Iterable[tuple[Any, Any]]) -> Key | None:
        """What the stamp of this response reads (None: more than the key holds, or ``lines``
        is not a list or tuple, which the stamp must read afterwards)."""
        if (method in self._rule_methods or (tags and self._dialect is not None)
                or not isinstance(lines, (list, tuple))):  # an iterator would be read up here
            return None
        unread = self._unread
        try:
            kept = tuple([(name, None if name in unread else value) for name, value in lines])
        except (TypeError, ValueError):  # a line that is not a pair, or a name that is no text
            return None
        return method, status, has_authorization, has_cookie, kept

    def holds(self, key: Key | None) -> bool:
        """Whether a response with this key (None: none) was stamped unchanged, with no ETag to add."""
        if key is None:
            return False
        try:
            return self._memo.get(key) is not None
        except TypeError:  # a value that cannot be hashed: never remembered either
            return False

    def learn(self, key: Key | None, unchanged: bool, generate_etag: bool) -> None:
        """Remember the response's stamp if it left the response as it was with no ETag to
        compute (anything else may depend on the values the key leaves out)."""
        if key is not None and unchanged and not generate_etag:
            self.add(key)

    def add(self, key: Key) -> None:
        """Remember that the response with this key left the stamp unchanged, with no ETag."""
        try:
            chars = sum([len(name) + (0 if value is None else len(value)) for name, value in key[4]])
            self._memo.put(key, True, chars=chars)
        except TypeError:  # a value without a length, or one that cannot be hashed
            pass

    def __len__(self) -> int:
        return len(self._memo)
