"""The metrics layer's count of the cache's plain hits, kept like the cache's own hit counter.

A plain hit never runs the metrics layer (see :mod:`scalekit.cache.hot`): it appends
``(line, seconds)`` to :attr:`HitLedger.pending`, one C call, where ``line`` is the request's
value handles resolved once per memo. The ledger adds what it holds to the request counter and
the duration histogram before the registry is read, and whenever the cache flushes its own
queues (at once in multiprocess mode, where another process reads the files).
"""

from __future__ import annotations

import collections
from bisect import bisect_left
from typing import Any

from .instruments import HTTP_DURATION, HTTP_REQUESTS, flush_before_collect

__all__ = ["HitLedger", "early_path"]


class HitLedger:
    """Requests answered by the cache's early path, counted for the metrics layer's
    ``scalekit_http_requests_total`` and ``scalekit_http_request_duration_seconds``."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self.pending: collections.deque[tuple[Any, float]] = collections.deque()
        for metric in (HTTP_REQUESTS, HTTP_DURATION):
            flush_before_collect(metric, self)

    def line(self, method: str, path: str, route: str, status: int) -> Any:
        """The handles a hit of ``route`` adds to (None: ``path`` is not measured)."""
        if not self._policy.is_measured(path):
            return None
        return self._policy.handles(method, route, status)

    def flush(self) -> None:
        """Add the hits appended so far: one addition per series and bucket, not per hit."""
        sums: dict[int, list[Any]] = {}
        popleft = self.pending.popleft
        while True:
            try:
                handles, seconds = popleft()
            except IndexError:
                break
            if handles[0] is None:  # the public API's handles: observed one by one
                self._policy.add(handles, 1, seconds, {0: 1})
                continue
            total = sums.get(id(handles))
            if total is None:
                total = sums[id(handles)] = [handles, 0, 0.0, collections.Counter()]
            total[1] += 1
            total[2] += seconds
            total[3][bisect_left(handles[3], seconds)] += 1
        for handles, hits, seconds, buckets in sums.values():
            self._policy.add(handles, hits, seconds, buckets)


def early_path(layer: Any, app: Any, policy: Any) -> Any:
    """The inner cache's early path, its plain hits counted in a :class:`HitLedger` (None: no
    cache inside). The paths this layer answers itself never take it."""
    plain_hits = getattr(app, "plain_hits", None)
    serve_early = getattr(app, "serve_early", None)
    if plain_hits is None or serve_early is None:
        return None
    endpoints = policy.endpoints
    plain_hits.add_stamper(lambda method, path, entry, lines: None if path in endpoints else lines)
    layer.ledger = HitLedger(policy)  # held here: the registry holds it only weakly
    plain_hits.count_requests(layer.ledger)
    layer.plain_hits = plain_hits
    return serve_early
