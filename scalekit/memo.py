"""Memos of results computed from client-supplied text, bounded in bytes, not only in entries.

Request paths, query strings, Host and Cache-Control values come from clients, who can make
each one unique and tens of KiB long. A memo bounded only by its number of entries then holds
thousands of those strings: 4,000 requests with 60 KiB query strings kept ~700 MiB. A
:class:`TextMemo` never keeps text longer than ``max_text_chars`` (such values are rare in real
traffic and simply computed again), and empties itself when it reaches ``max_entries``, so it
holds at most about ``max_entries * max_text_chars`` characters plus the results, which are
derived from the text and no larger.

>>> memo: TextMemo[int] = TextMemo(max_entries=2, max_text_chars=8)
>>> memo.put("short", 5); memo.get("short")
5
>>> memo.put("much too long to keep", 21); memo.get("much too long to keep") is None
True
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["TextMemo"]

Result = TypeVar("Result")


class TextMemo(Generic[Result]):
    """``text -> result`` for short texts, emptied when full (text is client-controlled, so an
    LRU's bookkeeping would only help an attacker who cycles through distinct values). A key
    may also be any hashable made of text (a tuple of header lines): its ``put`` then says
    how many characters it holds."""

    __slots__ = ("get", "items", "max_entries", "max_text_chars")

    def __init__(self, *, max_entries: int, max_text_chars: int) -> None:
        self.items: dict[Hashable, Result] = {}
        self.max_entries = max_entries
        self.max_text_chars = max_text_chars
        # The dict's own lookup: a memo hit is one C call.
        self.get = self.items.get

    def put(self, text: Hashable, result: Result, chars: int | None = None) -> None:
        """Remember ``result`` for ``text``, unless ``text`` is too long to be worth its bytes
        (``chars``: the characters a key that is not a str holds)."""
        if (len(text) if chars is None else chars) > self.max_text_chars:  # type: ignore[arg-type]
            return
        items = self.items
        if len(items) >= self.max_entries:
            items.clear()
        items[text] = result

    def __len__(self) -> int:
        return len(self.items)
