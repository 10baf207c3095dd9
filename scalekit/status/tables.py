"""The status page's tables as plain values, written out by the HTML page and ``scalekit top``.

One model, two formats: :func:`build_tables` decides what is shown (which numbers, in which
rows, formatted how); :mod:`scalekit.status.html` and :mod:`scalekit.status.commands` only lay it
out. Every number cell keeps its raw value beside its text, so the page's JSON and its HTML
(``data-value``) carry the exact figures ``/metrics`` has.

>>> from scalekit.status.snapshot import Snapshot
>>> traffic = build_tables(Snapshot(taken_at=0.0, requests=12.0), None)[0]
>>> [cell.text for cell in traffic.rows[0]]
['requests', '12']
"""

from __future__ import annotations

from dataclasses import dataclass

from .snapshot import Rates, Snapshot

__all__ = ["Cell", "Table", "build_tables", "format_bytes", "format_count", "format_ratio", "format_seconds"]

DASH = "–"


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: its text, the raw number behind it (None for labels), and a stable id."""

    text: str
    value: float | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """A titled table; ``columns`` is empty for a two-column list of named figures."""

    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    empty_text: str = ""


def format_count(value: float) -> str:
    """``1234.0`` -> ``'1,234'``; fractions keep one decimal."""
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def format_ratio(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def format_seconds(value: float | None) -> str:
    """Seconds, in the unit that reads best (``'250 µs'``, ``'12.5 ms'``, ``'3.20 s'``, ``'2.0 h'``)."""
    if value is None:
        return DASH
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 3600:
        return f"{value:.2f} s"
    return f"{value / 3600:.1f} h"


def format_bytes(value: float | None) -> str:
    if value is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _figure(label: str, id: str, value: float | None, text: str) -> tuple[Cell, ...]:
    return (Cell(label), Cell(text, value, id))


def _count(id: str, value: float) -> Cell:
    return Cell(format_count(value), value, id)


def build_tables(snapshot: Snapshot, rates: Rates | None) -> tuple[Table, ...]:
    """Every table of the page for ``snapshot``; ``rates`` None means not yet measured."""
    return (_traffic(snapshot, rates), _saved(snapshot, rates), _tiers(snapshot), _routes(snapshot),
            _invalidations(snapshot), _pools(snapshot))


def _rate(rates: Rates | None, name: str) -> float | None:
    return None if rates is None else float(getattr(rates, name))


def _per_second(value: float | None) -> str:
    return DASH if value is None else f"{value:,.1f}/s"


def _traffic(snapshot: Snapshot, rates: Rates | None) -> Table:
    outcomes = snapshot.outcomes
    rows = [
        _figure("requests", "requests-total", snapshot.requests, format_count(snapshot.requests)),
        _figure("requests per second", "requests-rate", _rate(rates, "requests"),
                _per_second(_rate(rates, "requests"))),
        _figure("in flight", "requests-in-flight", snapshot.in_flight, format_count(snapshot.in_flight)),
        _figure("server errors (5xx)", "requests-5xx", snapshot.server_errors,
                format_count(snapshot.server_errors)),
        _figure("cache hit ratio", "cache-hit-ratio", snapshot.hit_ratio, format_ratio(snapshot.hit_ratio)),
        _figure("cache hits per second", "cache-hits-rate", _rate(rates, "cache_hits"),
                _per_second(_rate(rates, "cache_hits"))),
    ]
    for outcome in ("hit", "stale", "revalidated", "miss", "bypass", "uncacheable"):
        value = outcomes.get(outcome, 0.0)
        rows.append(_figure(f"cache {outcome}", f"cache-{outcome}", value, format_count(value)))
    return Table(id="traffic", title="Traffic", columns=(), rows=tuple(rows))


def _saved(snapshot: Snapshot, rates: Rates | None) -> Table:
    per_second = _rate(rates, "origin_seconds_saved")
    rows = (
        _figure("origin time saved", "saved-origin", snapshot.origin_seconds_saved,
                format_seconds(snapshot.origin_seconds_saved)),
        _figure("database time saved", "saved-db", snapshot.db_seconds_saved,
                format_seconds(snapshot.db_seconds_saved)),
        # Seconds saved per second: how many busy workers the cache stands in for right now.
        _figure("origin seconds saved per second", "saved-origin-rate", per_second,
                DASH if per_second is None else f"{per_second:.2f}"),
    )
    return Table(id="saved", title="Time saved by cache hits", columns=(), rows=rows)


def _tiers(snapshot: Snapshot) -> Table:
    rows = []
    for tier in snapshot.tiers:
        name, lookups = tier.tier, tier.lookups
        rows.append((
            Cell(name),
            Cell(format_ratio(tier.hit_ratio), tier.hit_ratio, f"tier-{name}-hit-ratio"),
            _count(f"tier-{name}-hits", tier.hits),
            _count(f"tier-{name}-misses", lookups.get("miss", 0.0)),
            _count(f"tier-{name}-errors", lookups.get("error", 0.0) + lookups.get("corrupt", 0.0)),
            Cell(format_bytes(tier.bytes), tier.bytes, f"tier-{name}-bytes"),
            Cell(format_bytes(tier.max_bytes), tier.max_bytes, f"tier-{name}-max-bytes"),
            Cell(DASH if tier.entries is None else format_count(tier.entries), tier.entries,
                 f"tier-{name}-entries"),
            Cell("open" if tier.circuit_open else "closed", float(tier.circuit_open), f"tier-{name}-circuit"),
        ))
    return Table(id="tiers", title="Cache tiers",
                 columns=("tier", "hit ratio", "hits", "misses", "errors", "bytes", "bound", "entries",
                          "circuit"),
                 rows=tuple(rows), empty_text="no cache tier has answered yet")


def _routes(snapshot: Snapshot) -> Table:
    rows = tuple(
        (Cell(route.route),
         _count(f"route-{index}-requests", route.requests),
         Cell(format_ratio(route.hit_ratio), route.hit_ratio, f"route-{index}-hit-ratio"),
         Cell(format_seconds(route.origin_seconds_saved), route.origin_seconds_saved,
              f"route-{index}-saved-origin"),
         Cell(format_seconds(route.db_seconds_saved), route.db_seconds_saved, f"route-{index}-saved-db"))
        for index, route in enumerate(snapshot.routes))
    return Table(id="routes", title="Top routes by time saved",
                 columns=("route", "requests", "hit ratio", "origin time saved", "database time saved"),
                 rows=rows, empty_text="no requests yet")


def _invalidations(snapshot: Snapshot) -> Table:
    p50, p99 = snapshot.lag_quantile(0.5), snapshot.lag_quantile(0.99)
    rows = (
        _figure("invalidations", "invalidations-total", snapshot.invalidations,
                format_count(snapshot.invalidations)),
        _figure("heard from other instances", "invalidations-heard", snapshot.lag_count,
                format_count(snapshot.lag_count)),
        _figure("propagation lag p50", "invalidation-lag-p50", p50, format_seconds(p50)),
        _figure("propagation lag p99", "invalidation-lag-p99", p99, format_seconds(p99)),
    )
    return Table(id="invalidations", title="Invalidations", columns=(), rows=rows)


def _pools(snapshot: Snapshot) -> Table:
    rows = tuple(
        (Cell(pool.database),
         _count(f"pool-{pool.database}-used", pool.used),
         _count(f"pool-{pool.database}-idle", pool.idle),
         _count(f"pool-{pool.database}-max", pool.max_connections),
         _count(f"pool-{pool.database}-waiting", pool.waiting),
         _count(f"pool-{pool.database}-shed", pool.shed),
         _count(f"pool-{pool.database}-timeouts", pool.timeouts))
        for pool in snapshot.pools)
    return Table(id="pools", title="Connection pools",
                 columns=("database", "in use", "idle", "max", "waiting", "shed", "timed out"),
                 rows=rows, empty_text="no database connection has been lent yet")
