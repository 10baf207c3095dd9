"""Every Prometheus metric scalekit exports, declared once per process.

They live on prometheus_client's default registry so the app's own metrics are exposed beside
them on ``/metrics``. Gauges declare how they combine across gunicorn workers when
``PROMETHEUS_MULTIPROC_DIR`` is set (``livesum``: summed over live workers; a tier the workers
share, the disk tier, reports what the last worker to write it saw: see :func:`tier_gauge`). Label values always
come from closed sets: route templates, method names, status classes, tier names, outcomes.
"""

from __future__ import annotations

import collections
import functools
import os

from prometheus_client import Counter, Gauge, Histogram

from .flusher import FLUSHER, background_flush
from .handles import Increment, Settable, Tally, counter_handle, flush_before_collect, gauge_handle

__all__ = [
    "CACHE_BYTES",
    "CACHE_CIRCUIT_OPEN",
    "CACHE_COALESCED",
    "CACHE_COALESCED_WAITING",
    "CACHE_DB_SECONDS_SAVED",
    "CACHE_ENTRIES",
    "CACHE_EVICTIONS",
    "CACHE_INVALIDATIONS",
    "CACHE_INVALIDATIONS_PENDING",
    "CACHE_INVALIDATION_PROPAGATION",
    "CACHE_LOOKUPS",
    "CACHE_MAX_BYTES",
    "CACHE_ORIGIN_SECONDS_SAVED",
    "CACHE_REQUESTS",
    "CACHE_ROUTE_HITS",
    "CACHE_STORES",
    "CDN_BYTES_SAVED",
    "CDN_NOT_MODIFIED",
    "EDGE_PURGE_CALLS",
    "EDGE_PURGE_DROPPED",
    "EDGE_PURGE_LAG",
    "EDGE_PURGE_OLDEST",
    "EDGE_PURGE_QUEUED",
    "HOST_REJECTED",
    "HTTP_DURATION",
    "HTTP_IN_FLIGHT",
    "HTTP_REQUESTS",
    "POOL_CONNECTIONS",
    "POOL_LEAKS",
    "POOL_MAX",
    "POOL_PENDING",
    "POOL_SHED",
    "POOL_TIMEOUTS",
    "POOL_USE_TIME",
    "POOL_WAIT_TIME",
    "SHARED_TIERS",
    "SHARED_TWINS",
    "TWIN_NAMES",
    "Increment",
    "Savings",
    "Settable",
    "Tally",
    "counter_handle",
    "flush_before_collect",
    "gauge_handle",
    "savings",
    "tier_gauge",
]

# In multiprocess mode the unlabelled gauges below open their value file at declaration: a
# directory that does not exist yet (a fresh container, a gunicorn master importing its
# config) would make ``import scalekit`` fail.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

DURATION_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

# --- HTTP (metrics layer)
HTTP_REQUESTS = Counter(
    "scalekit_http_requests", "HTTP requests answered, by method, route template and status class.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "scalekit_http_request_duration_seconds",
    "Time from request received to response fully sent, by method and route template.",
    ["method", "route"], buckets=DURATION_BUCKETS_SECONDS,
)
HTTP_IN_FLIGHT = Gauge(
    "scalekit_http_requests_in_flight", "Requests being handled right now.",
    multiprocess_mode="livesum",
)
HOST_REJECTED = Counter(
    "scalekit_host_rejected", "Requests whose Host is outside allowed_hosts (never cached), by layer.",
    ["layer"],
)

# --- cache layer
CACHE_REQUESTS = Counter(
    "scalekit_cache_requests",
    "Requests seen by the cache layer, by outcome (hit, miss, stale, revalidated, bypass, uncacheable).",
    ["outcome"],
)
CACHE_COALESCED = Counter(
    "scalekit_cache_coalesced",
    "Coalesced misses (requests that waited for another request's origin call), by how the wait "
    "ended: served (its stored answer), origin (nothing shareable: went to the origin itself), "
    "timeout (coalesce_timeout_seconds passed: a stale entry, or the origin).",
    ["outcome"],
)
CACHE_COALESCED_WAITING = Gauge(
    "scalekit_cache_coalesced_waiting", "Requests waiting right now for another request's origin call.",
    multiprocess_mode="livesum",
)
CACHE_LOOKUPS = Counter(
    "scalekit_cache_lookups", "Tier lookups, by tier (memory, redis, disk) and outcome (hit, miss, error).",
    ["tier", "outcome"],
)
CACHE_STORES = Counter(
    "scalekit_cache_stores", "Entries written, by tier and outcome (ok, error, too_large).",
    ["tier", "outcome"],
)
CACHE_BYTES = Gauge(
    "scalekit_cache_bytes", "Bytes held by a tier of this process.", ["tier"], multiprocess_mode="livesum",
)
CACHE_ENTRIES = Gauge(
    "scalekit_cache_entries", "Entries held by a tier of this process.", ["tier"], multiprocess_mode="livesum",
)
CACHE_MAX_BYTES = Gauge(
    "scalekit_cache_max_bytes", "The byte bound of a tier of this process (summed like scalekit_cache_bytes).",
    ["tier"], multiprocess_mode="livesum",
)
# A tier every worker of a host shares (the disk tier's one file): under gunicorn's
# multiprocess mode its size is what the last worker to write it saw, not a sum over workers.
# prometheus_client merges one metric in one mode, so these gauges have twins in the "most
# recent" mode, merged back under the same names when /metrics is read (see tier_gauge).
SHARED_TIERS = frozenset({"disk"})
TWIN_NAMES = {"scalekit_cache_shared_bytes": "scalekit_cache_bytes",
              "scalekit_cache_shared_entries": "scalekit_cache_entries",
              "scalekit_cache_shared_max_bytes": "scalekit_cache_max_bytes"}
SHARED_TWINS = {
    metric: Gauge(twin, f"What {name} says, for a tier a host's workers share (merged into it).",
                  ["tier"], multiprocess_mode="mostrecent", registry=None)
    for metric, (twin, name) in zip((CACHE_BYTES, CACHE_ENTRIES, CACHE_MAX_BYTES), TWIN_NAMES.items(),
                                    strict=True)
}
CACHE_EVICTIONS = Counter(
    "scalekit_cache_evictions", "Entries evicted to respect a tier's byte bound.", ["tier"],
)
CACHE_INVALIDATIONS = Counter(
    "scalekit_cache_invalidations",
    "Tag invalidations applied, by source (api, http, cli, table, change_feed, unsafe_method, remote).",
    ["source"],
)
CACHE_INVALIDATION_PROPAGATION = Histogram(
    "scalekit_cache_invalidation_propagation_seconds",
    "Delay from an invalidation published by one instance to its arrival here.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
CACHE_INVALIDATIONS_PENDING = Gauge(
    "scalekit_cache_invalidations_pending",
    "Tags invalidated here that the fleet has not heard of yet (Redis unreachable; queued).",
    multiprocess_mode="livesum",
)
CACHE_CIRCUIT_OPEN = Gauge(
    "scalekit_cache_circuit_open", "1 while a tier's circuit breaker is open (tier skipped).", ["tier"],
    multiprocess_mode="max",
)
CACHE_ROUTE_HITS = Counter(
    "scalekit_cache_route_hits", "Requests answered from the cache, by route template.", ["route"],
)
CACHE_ORIGIN_SECONDS_SAVED = Counter(
    "scalekit_cache_origin_seconds_saved",
    "Time the app took to produce the responses that cache hits answered instead, by route template.",
    ["route"],
)
CACHE_DB_SECONDS_SAVED = Counter(
    "scalekit_cache_db_seconds_saved",
    "Database time of the requests that produced the responses cache hits answered, by route template.",
    ["route"],
)

# --- CDN layer
CDN_NOT_MODIFIED = Counter(
    "scalekit_cdn_not_modified", "304 Not Modified responses answered from ETag / Last-Modified.",
)
CDN_BYTES_SAVED = Counter(
    "scalekit_cdn_bytes_saved", "Body bytes not sent thanks to 304 responses.",
)

# --- edge purges (cdn.purge): labels are configured target names and closed sets
EDGE_PURGE_QUEUED = Counter(
    "scalekit_edge_purges_queued",
    "Invalidations queued for the edge, by queue: redis, local (the host's file), lost (neither took it).",
    ["queue"],
)
EDGE_PURGE_CALLS = Counter(
    "scalekit_edge_purge_calls",
    "Purge calls to an edge target, by outcome: sent (accepted), failed (retried later), "
    "rate_limited (429, retried after the wait asked), rejected (dropped).",
    ["target", "outcome"],
)
EDGE_PURGE_LAG = Histogram(
    "scalekit_edge_purge_lag_seconds",
    "From an invalidation being queued to the edge target accepting its purge.", ["target"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)
EDGE_PURGE_DROPPED = Counter(
    "scalekit_edge_purges_dropped",
    "Queued purges given up, by target and reason: rejected (the edge refused the request), "
    "expired (unsent after give_up_after_seconds).", ["target", "reason"],
)
EDGE_PURGE_OLDEST = Gauge(
    "scalekit_edge_purge_oldest_seconds",
    "Age of the oldest purge a process holds unsent for a target (0: none).", ["target"],
    multiprocess_mode="max",
)

# --- pool layer (modelled on OpenTelemetry's db.client.connection.* metrics)
POOL_CONNECTIONS = Gauge(
    "scalekit_pool_connections", "Pooled connections by database and state (used, idle).",
    ["database", "state"], multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "scalekit_pool_max_connections", "pool_size + max_overflow, by database.", ["database"],
    multiprocess_mode="livesum",
)
POOL_PENDING = Gauge(
    "scalekit_pool_pending_requests", "Requests waiting for a connection, by database.", ["database"],
    multiprocess_mode="livesum",
)
POOL_WAIT_TIME = Histogram(
    "scalekit_pool_wait_seconds", "Time a request waited to check out a connection.", ["database"],
    buckets=DURATION_BUCKETS_SECONDS,
)
POOL_USE_TIME = Histogram(
    "scalekit_pool_use_seconds", "Time a request held its connection.", ["database"],
    buckets=DURATION_BUCKETS_SECONDS,
)
POOL_TIMEOUTS = Counter(
    "scalekit_pool_timeouts", "Checkouts that waited past pool_timeout (answered 503).", ["database"],
)
POOL_SHED = Counter(
    "scalekit_pool_shed", "Requests shed at once because max_waiting requests were already queued.",
    ["database"],
)
POOL_LEAKS = Counter(
    "scalekit_pool_leak_warnings", "Connections held longer than leak_warning_seconds.", ["database"],
)


def tier_gauge(metric: Gauge, tier: str) -> Gauge:
    """The child of ``metric`` (CACHE_BYTES, CACHE_ENTRIES, CACHE_MAX_BYTES) that ``tier`` sets:
    its twin's for a tier shared by a host's workers in multiprocess mode."""
    if tier in SHARED_TIERS and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return SHARED_TWINS[metric].labels(tier)
    return metric.labels(tier)


# Past this many distinct route labels, saved time is counted under "overflow" (as the metrics
# layer does for requests): an app naming routes by raw path must not create a series per URL.
MAX_SAVINGS_ROUTES = 1000
OVERFLOW_ROUTE = "overflow"


class Savings:
    """What cache hits saved, by route template: hits, the origin's time and the database time
    of the responses they answered (``scalekit_cache_route_hits_total``,
    ``scalekit_cache_origin_seconds_saved_total``, ``scalekit_cache_db_seconds_saved_total``).

    A hit is one ``(route, origin_seconds, db_seconds)`` appended to :attr:`pending` (a list:
    atomic under the GIL, no lock, no lost update), about a tenth of three counter increments;
    the sums reach the counters before any collect and whenever ``pending`` holds
    :attr:`flush_at` hits, which bounds the memory held. A flush counts the tuples in C (they
    repeat: one per memoised hit), so a hit costs it a hash, not a turn of a Python loop. In
    multiprocess mode another process reads the counters' files, so this process's flusher
    thread (:mod:`.flusher`) also adds them every ``FLUSH_INTERVAL_SECONDS``. The cache's hot
    path appends the tuple its memoised hit keeps and checks the length itself (no Python
    call); elsewhere :meth:`record` does both.

    >>> savings().record("/items/{id}", 0.012, 0.004)
    """

    flush_every = 1024

    def __init__(self) -> None:
        self.pending: list[tuple[str, float, float]] = []
        self.flush_at = self.flush_every
        self._children: dict[str, tuple[Increment, Increment, Increment]] = {}
        for counter in (CACHE_ROUTE_HITS, CACHE_ORIGIN_SECONDS_SAVED, CACHE_DB_SECONDS_SAVED):
            flush_before_collect(counter, self)
        self._arm = background_flush(self)

    def record(self, route: str, origin_seconds: float, db_seconds: float) -> None:
        """One hit of a response of ``route`` that took ``origin_seconds`` (``db_seconds`` of
        them in the database) to produce."""
        pending = self.pending
        pending.append((route, origin_seconds, db_seconds))
        if len(pending) >= self.flush_at:
            self.flush()
        else:
            self._arm()

    def flush(self) -> None:
        """Add the hits recorded so far to the counters (those appended meanwhile stay
        pending: each is taken once, under the flusher's lock)."""
        pending = self.pending
        if not pending:
            return
        sums: dict[str, list[float]] = {}
        with FLUSHER.lock:
            taken = pending.copy()
            del pending[:len(taken)]  # appends after the copy stay for the next flush
            for (route, origin_seconds, db_seconds), hits in collections.Counter(taken).items():
                total = sums.get(route)
                if total is None:
                    total = sums[route] = [0, 0.0, 0.0]
                total[0] += hits
                total[1] += origin_seconds * hits
                total[2] += db_seconds * hits
            for route, (route_total, origin_seconds, db_seconds) in sums.items():
                route_hits, origin, database = self._children_for(route)
                route_hits.inc(route_total)
                if origin_seconds:
                    origin.inc(origin_seconds)
                if db_seconds:
                    database.inc(db_seconds)
        self._arm()

    def drop_inherited(self) -> None:
        """Forget the parent's pending hits (in a forked child: the parent counts them)."""
        self.pending.clear()

    def _children_for(self, route: str) -> tuple[Increment, Increment, Increment]:
        children = self._children.get(route)
        if children is None:
            label = route or "unmatched"
            if len(self._children) >= MAX_SAVINGS_ROUTES:
                label = OVERFLOW_ROUTE
            children = (counter_handle(CACHE_ROUTE_HITS.labels(label)),
                        counter_handle(CACHE_ORIGIN_SECONDS_SAVED.labels(label)),
                        counter_handle(CACHE_DB_SECONDS_SAVED.labels(label)))
            if len(self._children) < MAX_SAVINGS_ROUTES:
                self._children[route] = children
        return children


@functools.cache
def savings() -> Savings:
    """The process's :class:`Savings` (the counters are the process's too)."""
    return Savings()
