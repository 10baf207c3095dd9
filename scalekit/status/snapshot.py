"""What the status page shows, read from the metrics registry: one :class:`Snapshot` at a time.

Pure: :func:`read_snapshot` takes the metric families a registry collects (the same ones the
``/metrics`` exposition is written from, merged over gunicorn workers in multiprocess mode) and
returns plain numbers; :func:`rates_between` turns two snapshots into per-second rates, and
:func:`histogram_quantile` estimates a quantile from cumulative buckets the way Prometheus'
``histogram_quantile()`` does. No clock is read here: the caller passes the time.

>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> Counter("scalekit_http_requests", "", ["method", "route", "status"],
...         registry=registry).labels("GET", "/", "2xx").inc(3)
>>> read_snapshot(registry.collect(), taken_at=0.0).requests
3.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PoolStatus",
    "Rates",
    "RouteStatus",
    "Snapshot",
    "TierStatus",
    "histogram_quantile",
    "rates_between",
    "read_snapshot",
]

# The outcomes of scalekit_cache_requests_total that looked the response up (a bypassed or
# uncacheable request never could have been a hit, so it does not lower the ratio).
LOOKED_UP = ("hit", "stale", "revalidated", "miss")
TIER_ORDER = ("memory", "redis", "disk")
TOP_ROUTES = 10

Labels = Mapping[str, str]
Samples = dict[str, list[tuple[Labels, float]]]


@dataclass(frozen=True, slots=True)
class TierStatus:
    """One cache tier: its lookups by outcome, what it holds, and its breaker."""

    tier: str
    lookups: Mapping[str, float]
    bytes: float | None  # None: the tier does not report it here (Redis keeps its own count)
    max_bytes: float | None
    entries: float | None
    circuit_open: bool

    @property
    def hits(self) -> float:
        return self.lookups.get("hit", 0.0)

    @property
    def hit_ratio(self) -> float | None:
        """Hits over every lookup of this tier (None before the first)."""
        total = sum(self.lookups.values())
        return self.hits / total if total else None


@dataclass(frozen=True, slots=True)
class RouteStatus:
    """One route template: requests answered, cache hits, and the time its hits saved."""

    route: str
    requests: float
    hits: float
    origin_seconds_saved: float
    db_seconds_saved: float

    @property
    def hit_ratio(self) -> float | None:
        return self.hits / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """One database's pool: connections in use and idle, requests waiting, shed and timed out."""

    database: str
    used: float
    idle: float
    max_connections: float
    waiting: float
    shed: float
    timeouts: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every number of the status page at one moment (counters are totals since start)."""

    taken_at: float
    requests: float = 0.0
    server_errors: float = 0.0
    in_flight: float = 0.0
    outcomes: Mapping[str, float] = field(default_factory=dict)
    tiers: tuple[TierStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()
    pools: tuple[PoolStatus, ...] = ()
    invalidations: float = 0.0
    # Cumulative buckets of the invalidation propagation delay: (upper bound, count <= it).
    lag_buckets: tuple[tuple[float, float], ...] = ()
    origin_seconds_saved: float = 0.0
    db_seconds_saved: float = 0.0

    @property
    def cache_hits(self) -> float:
        return self.outcomes.get("hit", 0.0)

    @property
    def hit_ratio(self) -> float | None:
        """Requests answered from the cache (fresh or stale) over those it looked up, as the
        dashboard's "Overall hit ratio" (None before the first)."""
        looked_up = sum(self.outcomes.get(outcome, 0.0) for outcome in LOOKED_UP)
        answered = self.cache_hits + self.outcomes.get("stale", 0.0)
        return answered / looked_up if looked_up else None

    @property
    def lag_count(self) -> float:
        return self.lag_buckets[-1][1] if self.lag_buckets else 0.0

    def lag_quantile(self, quantile: float) -> float | None:
        """Estimated invalidation propagation delay at ``quantile`` (seconds), None without any."""
        return histogram_quantile(quantile, self.lag_buckets)


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates over the ``seconds`` between two snapshots."""

    seconds: float
    requests: float
    cache_hits: float
    origin_seconds_saved: float
    db_seconds_saved: float
    # Hits over lookups of each tier between the two snapshots (None: no lookup in between).
    tier_hit_ratio: Mapping[str, float | None] = field(default_factory=dict)


def rates_between(older: Snapshot, newer: Snapshot) -> Rates | None:
    """Rates from ``older`` to ``newer``; None if no time passed between them. A counter that
    went down (a worker restarted under multiprocess mode lost nothing, but a single process
    restarted does) counts as zero rather than a negative rate."""
    seconds = newer.taken_at - older.taken_at
    if seconds <= 0:
        return None

    def rate(now: float, before: float) -> float:
        return max(now - before, 0.0) / seconds

    before = {tier.tier: tier for tier in older.tiers}
    tier_hit_ratio: dict[str, float | None] = {}
    for tier in newer.tiers:
        earlier = before.get(tier.tier)
        hits = tier.hits - (earlier.hits if earlier else 0.0)
        lookups = sum(tier.lookups.values()) - (sum(earlier.lookups.values()) if earlier else 0.0)
        tier_hit_ratio[tier.tier] = hits / lookups if lookups > 0 and hits >= 0 else None
    return Rates(seconds=seconds, requests=rate(newer.requests, older.requests),
                 cache_hits=rate(newer.cache_hits, older.cache_hits),
                 origin_seconds_saved=rate(newer.origin_seconds_saved, older.origin_seconds_saved),
                 db_seconds_saved=rate(newer.db_seconds_saved, older.db_seconds_saved),
                 tier_hit_ratio=tier_hit_ratio)


def histogram_quantile(quantile: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """The ``quantile`` (0..1) of a histogram from its cumulative ``(upper bound, count)``
    buckets, interpolated linearly inside the bucket it falls in, as Prometheus'
    ``histogram_quantile()`` does; a quantile in the ``+Inf`` bucket is the largest finite
    bound. None for an empty histogram.

    >>> histogram_quantile(0.5, ((0.1, 2.0), (0.2, 4.0), (math.inf, 4.0)))
    0.1
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = quantile * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def read_snapshot(families: Iterable[Any], *, taken_at: float) -> Snapshot:
    """The status numbers in ``families`` (``registry.collect()``), as of ``taken_at``."""
    samples = _index(families)
    outcomes = _sum_by(samples, "scalekit_cache_requests_total", "outcome")
    return Snapshot(
        taken_at=taken_at,
        requests=_total(samples, "scalekit_http_requests_total"),
        server_errors=sum(value for labels, value in samples.get("scalekit_http_requests_total", ())
                          if labels.get("status") == "5xx"),
        in_flight=_total(samples, "scalekit_http_requests_in_flight"),
        outcomes=outcomes,
        tiers=_tiers(samples),
        routes=_routes(samples),
        pools=_pools(samples),
        invalidations=_total(samples, "scalekit_cache_invalidations_total"),
        lag_buckets=_buckets(samples, "scalekit_cache_invalidation_propagation_seconds_bucket"),
        origin_seconds_saved=_total(samples, "scalekit_cache_origin_seconds_saved_total"),
        db_seconds_saved=_total(samples, "scalekit_cache_db_seconds_saved_total"),
    )


def _index(families: Iterable[Any]) -> Samples:
    samples: Samples = defaultdict(list)
    for family in families:
        for sample in family.samples:
            samples[sample.name].append((sample.labels, float(sample.value)))
    return samples


def _total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, ()))


def _sum_by(samples: Samples, name: str, *labels: str) -> dict[Any, float]:
    """Sum of ``name``'s samples grouped by ``labels`` (one label: its value is the key)."""
    sums: dict[Any, float] = defaultdict(float)
    for sample_labels, value in samples.get(name, ()):
        key = tuple(sample_labels.get(label, "") for label in labels)
        sums[key[0] if len(labels) == 1 else key] += value
    return dict(sums)


def _tiers(samples: Samples) -> tuple[TierStatus, ...]:
    lookups = _sum_by(samples, "scalekit_cache_lookups_total", "tier", "outcome")
    held = _sum_by(samples, "scalekit_cache_bytes", "tier")
    bounds = _sum_by(samples, "scalekit_cache_max_bytes", "tier")
    entries = _sum_by(samples, "scalekit_cache_entries", "tier")
    circuits = _sum_by(samples, "scalekit_cache_circuit_open", "tier")
    names = {tier for tier, _ in lookups} | set(held) | set(bounds) | set(circuits)
    ordered = sorted(names, key=lambda tier: (TIER_ORDER.index(tier) if tier in TIER_ORDER else 9, tier))
    return tuple(
        TierStatus(tier=tier,
                   lookups={outcome: value for (name, outcome), value in lookups.items() if name == tier},
                   bytes=held.get(tier), max_bytes=bounds.get(tier), entries=entries.get(tier),
                   circuit_open=circuits.get(tier, 0.0) > 0)
        for tier in ordered)


def _routes(samples: Samples) -> tuple[RouteStatus, ...]:
    """The routes whose hits saved the most origin time (then the busiest), at most TOP_ROUTES."""
    requests = _sum_by(samples, "scalekit_http_requests_total", "route")
    hits = _sum_by(samples, "scalekit_cache_route_hits_total", "route")
    origin = _sum_by(samples, "scalekit_cache_origin_seconds_saved_total", "route")
    db = _sum_by(samples, "scalekit_cache_db_seconds_saved_total", "route")
    routes = [RouteStatus(route=route, requests=count, hits=hits.get(route, 0.0),
                          origin_seconds_saved=origin.get(route, 0.0), db_seconds_saved=db.get(route, 0.0))
              for route, count in requests.items() if count > 0]
    routes.sort(key=lambda route: (-route.origin_seconds_saved, -route.requests, route.route))
    return tuple(routes[:TOP_ROUTES])


def _pools(samples: Samples) -> tuple[PoolStatus, ...]:
    connections = _sum_by(samples, "scalekit_pool_connections", "database", "state")
    maximum = _sum_by(samples, "scalekit_pool_max_connections", "database")
    waiting = _sum_by(samples, "scalekit_pool_pending_requests", "database")
    shed = _sum_by(samples, "scalekit_pool_shed_total", "database")
    timeouts = _sum_by(samples, "scalekit_pool_timeouts_total", "database")
    names = sorted({database for database, _ in connections} | set(maximum))
    return tuple(
        PoolStatus(database=name, used=connections.get((name, "used"), 0.0),
                   idle=connections.get((name, "idle"), 0.0), max_connections=maximum.get(name, 0.0),
                   waiting=waiting.get(name, 0.0), shed=shed.get(name, 0.0), timeouts=timeouts.get(name, 0.0))
        for name in names)


def _buckets(samples: Samples, name: str) -> tuple[tuple[float, float], ...]:
    """Cumulative buckets of an unlabelled histogram (summed, should several series exist)."""
    counts: dict[float, float] = defaultdict(float)
    for labels, value in samples.get(name, ()):
        counts[float(labels.get("le", "+Inf"))] += value
    return tuple(sorted(counts.items()))
