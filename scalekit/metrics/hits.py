"""The metrics layer's count of requests, kept like the cache's own hit counter.

A plain hit never runs the metrics layer (see :mod:`scalekit.cache.hot`): it appends its
duration to the list of its kind (method, route, status), one C call, found once per memo by
:meth:`HitLedger.line`. Every other request is appended by the layer itself
(:meth:`HitLedger.record`): a list append where five locked counter and histogram updates
were. The ledger adds the lists to the request counter and the duration
histogram before the registry is read and whenever the cache flushes its own queues; in
multiprocess mode, where another process reads the files, the process's flusher thread adds
them too, every ``FLUSH_INTERVAL_SECONDS`` (:mod:`.flusher`). The duration is read on the
runtime's clock, which the cache reads anyway for the hit's Age.
"""

from __future__ import annotations

import collections
import functools
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from .flusher import FLUSHER, background_flush
from .handles import flush_before_collect
from .instruments import HTTP_DURATION, HTTP_REQUESTS

__all__ = ["HitLedger", "early_path"]

RECORD_FLUSH_AT = 1024
MAX_KINDS = 20_000


class HitLedger:
    """Every request the metrics layer counts, for ``scalekit_http_requests_total`` and
    ``scalekit_http_request_duration_seconds``: the plain hits the cache's early path answers
    (through :meth:`line`) and every other request (through :meth:`record`). Named for the
    hits it was first written for."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        # handles -> the durations of the hits counted with them since the last flush
        self._lines: dict[Any, list[float]] = {}
        # (method, route, status) -> its list in _lines, for the requests the layer records
        self._kinds: dict[tuple[str, str, int], list[float]] = {}
        for metric in (HTTP_REQUESTS, HTTP_DURATION):
            flush_before_collect(metric, self)
        self._arm = background_flush(self)

    def line(self, method: str, path: str, route: str, status: int) -> Callable[[float], object] | None:
        """What a hit of this kind calls with its duration (None: ``path`` is not measured)."""
        if not self._policy.is_measured(path):
            return None
        handles = self._policy.handles(method, route, status)
        self._arm()  # its hits are about to be appended (once per memo, not per hit)
        durations = self._lines.get(handles)
        if durations is None:
            durations = self._lines[handles] = []
        return durations.append

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request the layer finished (anything but a plain hit)."""
        durations = self._kinds.get((method, route, status))
        if durations is None:
            durations = self._list_for(method, route, status)
        durations.append(seconds)
        if len(durations) >= RECORD_FLUSH_AT:  # bounds what waits between flushes
            self.flush()

    def _list_for(self, method: str, route: str, status: int) -> list[float]:
        handles = self._policy.handles(method, route, status)
        self._arm()
        durations = self._lines.get(handles)
        if durations is None:
            durations = self._lines[handles] = []
        if len(self._kinds) < MAX_KINDS:  # raw methods and statuses are client-chosen
            self._kinds[(method, route, status)] = durations
        return durations

    def flush(self) -> None:
        """Add the hits counted so far: one addition per series and bucket, not per hit."""
        with FLUSHER.lock:  # two flushes copying one list would count its hits twice
            for handles, durations in list(self._lines.items()):
                if durations:
                    taken = durations.copy()
                    del durations[:len(taken)]  # hits appended meanwhile stay for the next flush
                    self._add_all(handles, taken)

    def drop_inherited(self) -> None:
        """Forget the parent's pending hits (in a forked child: the parent counts them), and
        which kinds it had seen, so the child's first request of each arms its own flusher."""
        self._kinds.clear()
        for durations in list(self._lines.values()):
            durations.clear()

    def _add_all(self, handles: Any, durations: list[float]) -> None:
        if min(durations) < 0:  # the wall clock stepped back during a hit
            durations = [max(seconds, 0.0) for seconds in durations]
        if handles[0] is None:  # no value handles: the public API, one observation each
            counter, histogram = handles[1], handles[2]
            counter.inc(len(durations))
            for seconds in durations:
                histogram.observe(seconds)
            return
        bounds = handles[3]
        if bounds and max(durations) <= bounds[0]:  # hits: all in the first bucket, as a rule
            buckets: dict[int, int] = {0: len(durations)}
        else:
            buckets = collections.Counter(map(functools.partial(bisect_left, bounds), durations))
        self._policy.add(handles, len(durations), sum(durations), buckets)


def early_path(layer: Any, app: Any, policy: Any) -> Any:
    """The inner cache's early path, its plain hits counted in a :class:`HitLedger` (None: no
    cache inside). The paths this layer answers itself never take it."""
    plain_hits = getattr(app, "plain_hits", None)
    serve_early = getattr(app, "serve_early", None)
    if plain_hits is None or serve_early is None:
        return None
    endpoints = policy.endpoints
    plain_hits.add_stamper(lambda method, path, entry, lines: None if path in endpoints else lines)
    layer.ledger = policy.ledger
    plain_hits.count_requests(layer.ledger)
    layer.plain_hits = plain_hits
    return serve_early
