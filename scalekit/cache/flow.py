"""The cache layer's request flow without I/O, driven by the WSGI and the ASGI shell alike.

A request is admitted (its primary key, or the app alone answers), then looked up and decided
by :func:`request_steps`, a generator in the style of httpx's ``auth_flow``: it yields each
store key it needs and receives what the store holds there, so one body of logic serves the
blocking store (:func:`drive`) and its async face (:func:`adrive`). Everything that counts or
chooses lives here or in :mod:`.policy`; the shells only read requests and send bytes.

>>> def steps():
...     found = yield "k"
...     return found
>>> drive(steps(), {"k": "stored"}.get)
'stored'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple

from .decisions import Decision, Fwd, RequestView
from .entry import CachedEntry

__all__ = ["Found", "Looked", "admit", "adrive", "drive", "request_steps"]

Found = tuple[CachedEntry, str] | None
Steps = Generator[str, Found, "Looked"]


class Looked(NamedTuple):
    """What the store held for a request and what to do with it: ``vary_index`` is the variant
    index of a Vary'd URL, ``entry_key`` the key its entry is (or would be) stored under."""

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


def request_steps(core: Any, view: RequestView, key: str, *, now: float,
                  collapsed_since: float | None = None) -> Steps:
    """Look ``key`` up (and the variant a Vary'd URL's index points at) and decide: yields the
    store keys to read, returns the decision with where its entry lives."""
    found = yield key
    index, entry_key = None, key
    miss: Fwd = "uri-miss"
    if found is not None:
        miss = "miss"
        if found[0].is_vary_index:
            index = found[0]
            variant = core.policy.variant_lookup(key, index, view)
            if variant is None:
                found, miss = None, "vary-miss"
            else:
                entry_key = variant
                found = yield variant
                if found is None:
                    miss = "vary-miss"
        if found is not None and not core.generations.is_current(found[0].tags):
            found = None  # a tag was invalidated after it was stored
    decision = core.policy.decide_request(view, found, now=now, miss=miss,
                                          collapsed_since=collapsed_since)
    return Looked(decision, index, entry_key)


def drive(steps: Steps, get: Callable[[str], Found], first: Callable[[str], Found] | None = None) -> Looked:
    """Run ``steps`` against a blocking store lookup (``first``, if given, for the first key)."""
    try:
        key = next(steps)
        if first is not None:
            key = steps.send(first(key))
        while True:
            key = steps.send(get(key))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def adrive(steps: Steps, aget: Callable[[str], Awaitable[Found]],
                 first: Callable[[str], Awaitable[Found]] | None = None) -> Looked:
    """Run ``steps`` against an async store lookup (``first``, if given, for the first key)."""
    try:
        key = next(steps)
        if first is not None:
            key = steps.send(await first(key))
        while True:
            key = steps.send(await aget(key))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
