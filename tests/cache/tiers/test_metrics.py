"""Tier metrics move as documented (lookups, stores, evictions, bytes, circuit state)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from contextlib import closing
from pathlib import Path

from prometheus_client import REGISTRY

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.disk import DB_NAME, DiskTier
from scalekit.cache.tiers.memory import MemoryTier
from scalekit.cache.tiers.redis import RedisConnections, RedisTier
from scalekit.config import RedisConfig
from scalekit.status.snapshot import read_snapshot
from scalekit.status.tables import DASH, build_tables

from .conftest import FakeClock
from .servers import RedisServer


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_entry(clock: FakeClock, body: bytes = b"x") -> CachedEntry:
    return CachedEntry(status=200, headers=(), body=body, request_time=clock.now,
                       response_time=clock.now, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=60.0)


def test_memory_counts_hits_misses_evictions_and_bytes(clock: FakeClock) -> None:
    hits = sample("scalekit_cache_lookups_total", tier="memory", outcome="hit")
    misses = sample("scalekit_cache_lookups_total", tier="memory", outcome="miss")
    evictions = sample("scalekit_cache_evictions_total", tier="memory")
    gc.collect()  # the L1s of earlier tests still alive here count in the gauge too
    held = sample("scalekit_cache_bytes", tier="memory")
    tier = MemoryTier(max_bytes=3_000, clock=clock)
    tier.set("a", make_entry(clock, b"a" * 1000))
    tier.get("a")
    tier.get("b")
    tier.set("c", make_entry(clock, b"c" * 1000))
    tier.set("d", make_entry(clock, b"d" * 1000))
    assert sample("scalekit_cache_lookups_total", tier="memory", outcome="hit") == hits + 1
    assert sample("scalekit_cache_lookups_total", tier="memory", outcome="miss") == misses + 1
    assert sample("scalekit_cache_evictions_total", tier="memory") > evictions
    assert sample("scalekit_cache_bytes", tier="memory") == held + tier.current_bytes


def test_open_breaker_shows_in_the_gauge_and_skips_count_as_bypass(clock: FakeClock) -> None:
    tier = RedisTier(RedisConnections(RedisConfig(url="redis://127.0.0.1:1/0"), monotonic=clock),
                     clock=clock)
    bypass = sample("scalekit_cache_lookups_total", tier="redis", outcome="bypass")
    for _ in range(3):  # three failures in a row open it
        tier.get("k")
    assert sample("scalekit_cache_circuit_open", tier="redis") == 1
    tier.get("k")
    assert sample("scalekit_cache_lookups_total", tier="redis", outcome="bypass") == bypass + 1
    tier.breaker.reset()
    assert sample("scalekit_cache_circuit_open", tier="redis") == 0


def test_corrupt_disk_entry_is_counted(tmp_path: Path, clock: FakeClock) -> None:
    import sqlite3

    tier = DiskTier(tmp_path, codec=Codec(), clock=clock)
    tier.set("k", make_entry(clock))
    assert tier.flush()
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection, connection:
        connection.execute("UPDATE entries SET value = x'00'")
    corrupt = sample("scalekit_cache_lookups_total", tier="disk", outcome="corrupt")
    assert tier.get("k") is None
    assert sample("scalekit_cache_lookups_total", tier="disk", outcome="corrupt") == corrupt + 1
    assert sample("scalekit_cache_entries", tier="disk") >= 1  # published on the first write


def test_disk_counts_its_misses_and_hits(tmp_path: Path, clock: FakeClock) -> None:
    # Its misses are queued (one C call each) and added at scrape time: the queue must live as
    # long as the tier, or every miss after construction is lost.
    tier = DiskTier(tmp_path, codec=Codec(), clock=clock)
    gc.collect()
    misses = sample("scalekit_cache_lookups_total", tier="disk", outcome="miss")
    hits = sample("scalekit_cache_lookups_total", tier="disk", outcome="hit")
    tier.set("k", make_entry(clock))
    assert tier.flush()
    for key in ("a", "b", "c"):
        assert tier.get(key) is None
    assert tier.get("k") is not None
    assert sample("scalekit_cache_lookups_total", tier="disk", outcome="miss") == misses + 3
    assert sample("scalekit_cache_lookups_total", tier="disk", outcome="hit") == hits + 1



def test_a_restarted_disk_tier_reports_what_its_file_already_holds(tmp_path: Path, clock: FakeClock) -> None:
    """L3 outlives the process: after a restart its bytes and entries are the file's from its
    first look at the file, not 0 (a dash on the status page) until this process writes."""
    before = DiskTier(tmp_path, codec=Codec(), clock=clock)
    for key in ("a", "b", "c"):
        before.set(key, make_entry(clock, b"x" * 500))
    assert before.flush()
    held = before.current_bytes
    before.close()
    script = textwrap.dedent(f"""
        import time
        from prometheus_client import REGISTRY
        from scalekit.cache.codec import Codec
        from scalekit.cache.tiers.disk import DiskTier
        tier = DiskTier({str(tmp_path)!r}, codec=Codec())
        assert tier.get("nothing") is None  # the first lookup starts the writer's first look
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            entries = REGISTRY.get_sample_value("scalekit_cache_entries", {{"tier": "disk"}})
            if entries:
                break
            time.sleep(0.01)
        print(entries, REGISTRY.get_sample_value("scalekit_cache_bytes", {{"tier": "disk"}}))
        tier.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    assert done.returncode == 0, done.stderr
    entries, size = done.stdout.split()
    assert float(entries) == 3
    assert float(size) == held > 1500

def test_memory_gauges_are_read_at_scrape_time_without_keeping_the_tier(clock: FakeClock) -> None:
    # The gauges are the process's: an L1 an earlier test left alive counts in them too.
    gc.collect()
    entries, held = sample("scalekit_cache_entries", tier="memory"), sample("scalekit_cache_bytes", tier="memory")
    tier = MemoryTier(max_bytes=100_000, clock=clock)
    tier.set("a", make_entry(clock, b"a" * 1000))
    tier.set("b", make_entry(clock, b"b" * 1000))
    assert sample("scalekit_cache_entries", tier="memory") == entries + 2
    assert sample("scalekit_cache_bytes", tier="memory") == held + tier.current_bytes
    lru = weakref.ref(tier._cache)
    del tier
    gc.collect()
    assert lru() is None  # the registry's reading function does not keep the entries alive
    assert sample("scalekit_cache_entries", tier="memory") == entries


def test_two_l1s_in_one_process_both_count_in_its_gauges(clock: FakeClock) -> None:
    """Two apps wrapped in one process have an L1 each; the process's gauges hold both (each
    tier setting the gauge to its own size, the last one made would hide the other)."""
    gc.collect()
    entries, held = sample("scalekit_cache_entries", tier="memory"), sample("scalekit_cache_bytes", tier="memory")
    first, second = MemoryTier(max_bytes=100_000, clock=clock), MemoryTier(max_bytes=100_000, clock=clock)
    first.set("a", make_entry(clock, b"a" * 1000))
    second.set("b", make_entry(clock, b"b" * 500))
    second.set("c", make_entry(clock, b"c" * 500))
    assert sample("scalekit_cache_entries", tier="memory") == entries + 3
    assert sample("scalekit_cache_bytes", tier="memory") == held + first.current_bytes + second.current_bytes
    second.close()
    assert sample("scalekit_cache_entries", tier="memory") == entries + 1
    assert sample("scalekit_cache_bytes", tier="memory") == held + first.current_bytes


def test_redis_reports_no_bytes_entries_or_evictions_of_its_own(redis_server: RedisServer, clock: FakeClock,
                                                                  tmp_path: Path) -> None:
    # Redis keeps those (INFO): a series here would read 0 on every instance, and the status
    # page and the dashboards would show a full L2 as empty. L1 and L3 report theirs.
    tier = RedisTier(RedisConnections(RedisConfig(url=redis_server.url)), clock=clock)
    disk = DiskTier(tmp_path, codec=Codec(), clock=clock)
    memory = MemoryTier(max_bytes=10_000, clock=clock)
    for each in (tier, disk, memory):
        each.set("k", make_entry(clock, b"x" * 100))
        assert each.get("k") is not None
    assert disk.flush()
    for name in ("scalekit_cache_bytes", "scalekit_cache_entries", "scalekit_cache_evictions_total"):
        assert REGISTRY.get_sample_value(name, {"tier": "redis"}) is None, name
        assert REGISTRY.get_sample_value(name, {"tier": "memory"}) is not None, name
    snapshot = read_snapshot(REGISTRY.collect(), taken_at=0.0)
    redis_row = next(row for row in snapshot.tiers if row.tier == "redis")
    assert redis_row.hits >= 1 and redis_row.bytes is None and redis_row.entries is None
    tiers = next(table for table in build_tables(snapshot, None) if table.id == "tiers")
    cells = next(row for row in tiers.rows if row[0].text == "redis")
    assert [cells[index].text for index in (5, 7)] == [DASH, DASH]  # bytes, entries: not "0"
    tier.connections.close()
