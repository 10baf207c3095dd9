"""Hypothesis stateful test of the tiered cache against a model, with real tiers and faults.

Real L1 (memory), L2 (a redis-server behind a TCP proxy the test cuts), L3 (SQLite under a temp
directory) and fleet generations (Redis + pub/sub over a host-persisted file), one injected
clock. Random interleavings of stores, gets, deletes, invalidations, clock advances, Redis
stopped/restored, disk made unwritable/writable, and entries corrupted in Redis or on disk.

Held after every step (DESIGN.md invariants):
1/4. A lookup returns nothing, or exactly the entry last stored under that key (never another
     key's, never an older one a failed write or delete left behind).
2.   An entry whose tags were invalidated after it was stamped is never current.
6.   L1 and L3 stay within their byte bounds.
Also: nothing is returned past its usable life, and with no fault since it was stored, a live
entry is found (the tiers do not lose entries they should have).
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.hostgenerations import HostGenerations
from scalekit.cache.tiers.base import kept_until
from scalekit.cache.tiers.breaker import CircuitBreaker
from scalekit.cache.tiers.disk import DB_NAME, DiskTier, key_hash
from scalekit.cache.tiers.fleet import FleetGenerations
from scalekit.cache.tiers.memory import MemoryTier
from scalekit.cache.tiers.redis import NO_CLIENT_INFO, RedisConnections, RedisTier, entry_key
from scalekit.cache.tiers.tiered import TieredStore
from scalekit.config import RedisConfig

from .conftest import FakeClock
from .servers import RedisServer, TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

KEYS = ("GET https://a.example/1", "GET https://a.example/2", "GET https://b.example/1")
TAGS = ("product:1", "product:2", "table:items")
RETAIN_SECONDS = 2.0
COOL_DOWN_SECONDS = 0.5
MEMORY_MAX, DISK_MAX = 6_000, 9_000
SERVER: RedisServer | None = None
_counter = itertools.count()


class TieredCacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert SERVER is not None
        self.clock = FakeClock()
        self.directory = Path(tempfile.mkdtemp(prefix="scalekit-stateful-"))
        self.proxy = TcpProxy(SERVER.port)
        self.prefix = f"stateful{next(_counter)}:"
        config = RedisConfig(url=self.proxy.url, key_prefix=self.prefix, socket_timeout_seconds=1.0,
                             connect_timeout_seconds=1.0, circuit_cool_down_seconds=COOL_DOWN_SECONDS)
        self.connections = RedisConnections(config, monotonic=self.clock)
        codec = Codec(compress_min_bytes=256, secret=b"stateful-secret-0123456789")
        self.memory = MemoryTier(max_bytes=MEMORY_MAX, max_entry_bytes=3_000, clock=self.clock,
                                 retain_stale_seconds=RETAIN_SECONDS)
        self.redis = RedisTier(self.connections, codec=codec, clock=self.clock,
                               retain_stale_seconds=RETAIN_SECONDS)
        self.disk = DiskTier(self.directory, max_bytes=DISK_MAX, max_entry_bytes=4_000, codec=codec,
                             clock=self.clock, retain_stale_seconds=RETAIN_SECONDS,
                             breaker=CircuitBreaker("disk", cool_down_seconds=COOL_DOWN_SECONDS, monotonic=self.clock))
        self.disk._connection()  # create the file, so the bound can be read from step one
        self.store = TieredStore([self.memory, self.redis, self.disk])
        self.generations = FleetGenerations(
            HostGenerations(self.directory / "generations.sqlite3"),
            RedisConnections(config), max_staleness_seconds=2.0, heartbeat_seconds=0.1)
        self.generations.wait_connected(20.0)
        self.direct = redis.Redis.from_url(SERVER.url, **NO_CLIENT_INFO)
        # The model.
        self.latest: dict[str, CachedEntry | None] = {key: None for key in KEYS}
        self.invalidations = {tag: 0 for tag in TAGS}
        self.stamped: dict[bytes, dict[str, int]] = {}  # body -> invalidation counts when stamped
        self.intact: dict[str, bool] = {key: False for key in KEYS}  # no fault since stored
        self.redis_up = True
        self.disk_writable = True

    def teardown(self) -> None:
        self.generations.close()
        self.generations.connections.close()
        self.store.close()
        self.connections.close()
        self.direct.close()
        self.proxy.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _fault(self) -> None:
        self.intact = {key: False for key in KEYS}

    # ----------------------------------------------------------------- operations
    @rule(key=st.sampled_from(KEYS), tags=st.sets(st.sampled_from(TAGS)),
          size=st.integers(0, 2_500), ttl=st.sampled_from([1.0, 10.0, 100.0]))
    def store_entry(self, key: str, tags: set[str], size: int, ttl: float) -> None:
        since = self.generations.sequence()
        stamp = self.generations.stamp(sorted(tags), since)
        assert stamp is not None  # nothing invalidated in between
        body = f"{next(_counter)}:".encode() + b"b" * size
        entry = CachedEntry(status=200, headers=(("content-type", "text/plain"), ("x-key", key)),
                            body=body, request_time=self.clock.now, response_time=self.clock.now,
                            corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=ttl,
                            tags=stamp)
        self.store.set(key, entry)
        self.latest[key] = entry
        self.stamped[body] = {tag: self.invalidations[tag] for tag in tags}
        healthy = self.redis_up and not self.connections.breaker.is_open
        self.intact[key] = healthy and self.disk_writable and not self.disk.breaker.is_open

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: str) -> None:
        self._check_lookup(key)

    @rule(key=st.sampled_from(KEYS))
    def get_after_memory_eviction(self, key: str) -> None:
        """What L1's LRU does under pressure, on demand: then L2/L3 must answer correctly."""
        self.memory.delete(key)
        self._check_lookup(key)

    def _check_lookup(self, key: str) -> None:
        found = self.store.get(key)
        latest = self.latest[key]
        if found is None:
            if latest is not None and self.intact[key]:
                alive = kept_until(latest, retain_stale_seconds=RETAIN_SECONDS) > self.clock.now
                assert not alive, f"lost a live entry under {key!r} with no fault since"
            return
        entry = found[0]
        assert entry == latest, "served something other than the last entry stored under this key"
        assert kept_until(entry, retain_stale_seconds=RETAIN_SECONDS) > self.clock.now
        if self.generations.is_current(entry.tags):
            assert self.stamped[entry.body] == {tag: self.invalidations[tag] for tag, _ in entry.tags}, \
                "an entry whose tag was invalidated after its stamp is current"

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        self.store.delete(key)
        self.latest[key] = None

    @rule(tags=st.sets(st.sampled_from(TAGS), min_size=1))
    def invalidate(self, tags: set[str]) -> None:
        self.generations.invalidate(sorted(tags))
        for tag in tags:
            self.invalidations[tag] += 1

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 30.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # ----------------------------------------------------------------- faults
    @precondition(lambda self: self.redis_up)
    @rule()
    def stop_redis(self) -> None:
        self.proxy.cut()
        self.redis_up = False
        self._fault()

    @precondition(lambda self: not self.redis_up)
    @rule()
    def restore_redis(self) -> None:
        self.proxy.restore()
        self.clock.advance(COOL_DOWN_SECONDS)  # the breakers try again
        self.redis_up = True

    @precondition(lambda self: self.disk_writable)
    @rule()
    def make_disk_unwritable(self) -> None:
        self.disk._connection().execute("PRAGMA query_only = 1")
        self.disk_writable = False
        self._fault()

    @precondition(lambda self: not self.disk_writable)
    @rule()
    def make_disk_writable(self) -> None:
        self.disk._connection().execute("PRAGMA query_only = 0")
        self.clock.advance(COOL_DOWN_SECONDS)
        self.disk_writable = True

    @rule(key=st.sampled_from(KEYS), cut=st.integers(0, 40))
    def corrupt_redis_entry(self, key: str, cut: int) -> None:
        redis_key = entry_key(self.prefix, key)
        value = self.direct.get(redis_key)
        if value is not None:
            self.direct.set(redis_key, value[:cut] + b"\x00garbage", keepttl=True)
            self.intact[key] = False

    @rule(key=st.sampled_from(KEYS), cut=st.integers(0, 40))
    def corrupt_disk_entry(self, key: str, cut: int) -> None:
        with closing(sqlite3.connect(self.directory / DB_NAME, timeout=5)) as connection, connection:
            row = connection.execute("SELECT value FROM entries WHERE hash = ?", (key_hash(key),)).fetchone()
            changed = row is not None and connection.execute(
                "UPDATE entries SET value = ? WHERE hash = ?",
                (bytes(row[0])[:cut] + b"\x00garbage", key_hash(key))).rowcount
        if changed:
            self.intact[key] = False

    # ----------------------------------------------------------------- bounds
    @invariant()
    def memory_within_its_bound(self) -> None:
        assert self.memory.current_bytes <= MEMORY_MAX

    @invariant()
    def disk_within_its_bound(self) -> None:
        with closing(sqlite3.connect(self.directory / DB_NAME, timeout=5)) as connection, connection:
            total = connection.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
        assert total <= DISK_MAX


def test_tiered_cache_holds_its_invariants(redis_server: RedisServer) -> None:
    global SERVER
    SERVER = redis_server
    run_state_machine_as_test(TieredCacheMachine, settings=settings(
        max_examples=30, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
