"""The pure parts of the status page: reading a registry, quantiles from buckets, rates."""

from __future__ import annotations

import bisect
import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scalekit.status.snapshot import (
    Snapshot,
    TierStatus,
    histogram_quantile,
    rates_between,
    read_snapshot,
)
from scalekit.status.tables import format_bytes, format_count, format_ratio, format_seconds

BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def test_a_registry_reads_into_a_snapshot() -> None:
    registry = CollectorRegistry()
    requests = Counter("scalekit_http_requests", "", ["method", "route", "status"], registry=registry)
    requests.labels("GET", "/a/{id}", "2xx").inc(5)
    requests.labels("POST", "/a/{id}", "5xx").inc(2)
    requests.labels("GET", "/b", "2xx").inc(1)
    outcomes = Counter("scalekit_cache_requests", "", ["outcome"], registry=registry)
    outcomes.labels("hit").inc(3)
    outcomes.labels("miss").inc(1)
    outcomes.labels("bypass").inc(10)  # never looked up: not in the ratio
    lookups = Counter("scalekit_cache_lookups", "", ["tier", "outcome"], registry=registry)
    lookups.labels("disk", "hit").inc(1)
    lookups.labels("memory", "hit").inc(3)
    lookups.labels("memory", "miss").inc(1)
    Gauge("scalekit_cache_bytes", "", ["tier"], registry=registry).labels("memory").set(2048)
    Gauge("scalekit_cache_circuit_open", "", ["tier"], registry=registry).labels("redis").set(1)
    saved = Counter("scalekit_cache_origin_seconds_saved", "", ["route"], registry=registry)
    saved.labels("/b").inc(4.5)
    lag = Histogram("scalekit_cache_invalidation_propagation_seconds", "", buckets=BOUNDS, registry=registry)
    for seconds in (0.0015, 0.0015, 0.003, 0.2):
        lag.observe(seconds)

    snapshot = read_snapshot(registry.collect(), taken_at=100.0)
    assert (snapshot.requests, snapshot.server_errors) == (8, 2)
    assert snapshot.hit_ratio == 0.75
    assert [tier.tier for tier in snapshot.tiers] == ["memory", "redis", "disk"]
    memory, redis, disk = snapshot.tiers
    assert (memory.hit_ratio, memory.bytes, memory.max_bytes, memory.circuit_open) == (0.75, 2048, None, False)
    assert redis.circuit_open and redis.hit_ratio is None
    assert disk.hit_ratio == 1.0
    assert [route.route for route in snapshot.routes] == ["/b", "/a/{id}"]  # time saved first
    assert snapshot.origin_seconds_saved == 4.5
    assert snapshot.lag_count == 4
    assert 0.001 <= (snapshot.lag_quantile(0.5) or 0) <= 0.002
    assert 0.1 <= (snapshot.lag_quantile(0.99) or 0) <= 0.25


def test_an_empty_registry_reads_as_nothing_yet() -> None:
    snapshot = read_snapshot(CollectorRegistry().collect(), taken_at=0.0)
    assert snapshot == Snapshot(taken_at=0.0)
    assert snapshot.hit_ratio is None and snapshot.lag_quantile(0.5) is None


@given(st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200), st.floats(0.01, 0.99))
def test_a_quantile_falls_in_the_bucket_of_the_true_one(observations: list[float], quantile: float) -> None:
    bounds = (*BOUNDS, math.inf)
    counts = [0.0] * len(bounds)
    for seconds in observations:
        counts[bisect.bisect_left(bounds, seconds)] += 1
    cumulative = tuple(zip(bounds, [sum(counts[: index + 1]) for index in range(len(bounds))], strict=True))
    estimate = histogram_quantile(quantile, cumulative)
    assert estimate is not None
    # The observation at that rank lies in some bucket; the estimate lies within that bucket.
    ordered = sorted(observations)
    true = ordered[max(math.ceil(quantile * len(ordered)) - 1, 0)]
    index = bisect.bisect_left(bounds, true)
    lower = bounds[index - 1] if index else 0.0
    upper = bounds[index] if not math.isinf(bounds[index]) else bounds[-2]
    assert lower <= estimate <= upper
    assert histogram_quantile(0.5, cumulative) <= histogram_quantile(0.99, cumulative)  # type: ignore[operator]


def test_rates_are_per_second_and_never_negative() -> None:
    tier = TierStatus(tier="memory", lookups={"hit": 10.0, "miss": 10.0}, bytes=0.0, max_bytes=None,
                      entries=0.0, circuit_open=False)
    older = Snapshot(taken_at=10.0, requests=100.0, outcomes={"hit": 50.0}, tiers=(tier,))
    newer = Snapshot(taken_at=14.0, requests=140.0, outcomes={"hit": 70.0}, origin_seconds_saved=2.0,
                     tiers=(TierStatus(tier="memory", lookups={"hit": 19.0, "miss": 11.0}, bytes=0.0,
                                       max_bytes=None, entries=0.0, circuit_open=False),))
    rates = rates_between(older, newer)
    assert rates is not None
    assert (rates.seconds, rates.requests, rates.cache_hits, rates.origin_seconds_saved) == (4.0, 10.0, 5.0, 0.5)
    assert rates.tier_hit_ratio == {"memory": 0.9}
    restarted = rates_between(newer, Snapshot(taken_at=15.0, requests=3.0))
    assert restarted is not None and restarted.requests == 0.0
    assert rates_between(newer, newer) is None


def test_figures_read_well() -> None:
    assert [format_count(v) for v in (0.0, 1234.0, 2.5)] == ["0", "1,234", "2.5"]
    assert [format_ratio(v) for v in (None, 0.9876)] == ["–", "98.8%"]
    assert [format_seconds(v) for v in (None, 0.00025, 0.0125, 3.2, 7200.0)] == [
        "–", "250 µs", "12.5 ms", "3.20 s", "2.0 h"]
    assert [format_bytes(v) for v in (None, 512.0, 2048.0, 3 * 1024**3, 5 * 1024**4)] == [
        "–", "512 B", "2.0 KiB", "3.0 GiB", "5120.0 GiB"]
