"""The cache layer's request flow without I/O, driven by the WSGI and the ASGI shell alike.

A request is admitted (its primary key, or the app alone answers), then looked up and decided:
:func:`decide_found` decides from what the store held under the primary key, or names the one
more key a Vary'd URL's index points at, which :func:`decide_variant` decides from. The drivers
do the reads, blocking (:func:`drive`) or async (:func:`adrive`), so one body of logic serves
both faces of the store. (It was a generator yielding the keys it needed, in the style of
httpx's ``auth_flow``; its ending StopIteration and the generator itself cost a miss about
4,000 instructions, for a second read only a Vary'd URL needs.) Everything that counts or
chooses lives here or in :mod:`.policy`; the shells only read requests and send bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from .decisions import Decision, Fwd, RequestView
from .entry import CachedEntry

__all__ = ["Found", "Looked", "admit", "adrive", "decide_found", "decide_variant", "drive"]

Found = tuple[CachedEntry, str] | None
_new_tuple = tuple.__new__  # see Looked


class Looked(NamedTuple):
    """What the store held for a request and what to do with it: ``vary_index`` is the variant
    index of a Vary'd URL, ``entry_key`` the key its entry is (or would be) stored under. Built
    by ``tuple.__new__``: the NamedTuple's own ``__new__`` is a Python function, 1,300
    instructions more a request."""

    decision: Decision
    vary_index: CachedEntry | None
    entry_key: str


def admit(core: Any, view: RequestView) -> tuple[str | None, tuple[str, str] | None]:
    """The request's primary key, or None when the app alone answers (counted as a bypass),
    with the header to add to that answer (a Host outside ``allowed_hosts`` says so)."""
    if view.special and core.policy.bypasses(view):
        core.count("bypass")
        return None, None
    key: str | None = core.policy.primary_key(view)
    if key is None:
        core.hosts_rejected.inc()
        core.count("bypass")
        return None, core.host_rejected_status
    return key, None


def decide_found(core: Any, view: RequestView, key: str, found: Found, now: float,
                 collapsed_since: float | None = None) -> Looked | tuple[str, CachedEntry]:
    """The decision for what the store held under the primary ``key``; for a Vary'd URL's
    index, the variant's key to read next and the index (see :func:`decide_variant`)."""
    if found is None:
        if not view.special:  # the usual miss: nothing stored, nothing in the request to weigh
            return _new_tuple(Looked, (core.policy.decide_plain_miss(view), None, key))
        return _decided(core, view, None, "uri-miss", None, key, now, collapsed_since)
    stored = found[0]
    if stored.is_vary_index:
        variant = core.policy.variant_lookup(key, stored, view)
        if variant is not None:
            return variant, stored
        return _decided(core, view, None, "vary-miss", stored, key, now, collapsed_since)
    return _decided(core, view, found, "miss", None, key, now, collapsed_since)


def decide_variant(core: Any, view: RequestView, index: CachedEntry, variant: str, found: Found,
                   now: float, collapsed_since: float | None = None) -> Looked:
    """The decision for what the store held under ``variant``, the key ``index`` names."""
    return _decided(core, view, found, "miss" if found is not None else "vary-miss", index, variant,
                    now, collapsed_since)


def _decided(core: Any, view: RequestView, found: Found, miss: Fwd, index: CachedEntry | None,
             entry_key: str, now: float, collapsed_since: float | None) -> Looked:
    if found is not None and not core.generations.is_current(found[0].tags):
        found = None  # a tag was invalidated after it was stored
    decision = core.policy.decide_request(view, found, now=now, miss=miss, collapsed_since=collapsed_since)
    return _new_tuple(Looked, (decision, index, entry_key))


def drive(core: Any, view: RequestView, key: str, now: float, get: Callable[[str], Found],
          first: Callable[[str], Found] | None = None, collapsed_since: float | None = None) -> Looked:
    """Look ``key`` up with a blocking store read (``first``, if given, for the primary key) and
    decide."""
    looked = decide_found(core, view, key, (first or get)(key), now, collapsed_since)
    if isinstance(looked, Looked):
        return looked
    variant, index = looked
    return decide_variant(core, view, index, variant, get(variant), now, collapsed_since)


async def adrive(core: Any, view: RequestView, key: str, now: float, aget: Callable[[str], Awaitable[Found]],
                 first: Callable[[str], Awaitable[Found]] | None = None,
                 collapsed_since: float | None = None) -> Looked:
    """:func:`drive` with an async store read."""
    looked = decide_found(core, view, key, await (first or aget)(key), now, collapsed_since)
    if isinstance(looked, Looked):
        return looked
    variant, index = looked
    return decide_variant(core, view, index, variant, await aget(variant), now, collapsed_since)
