"""Benchmarks of the cache tiers, each printed next to its target and a same-run baseline.

    python bench/cache_tiers.py            # starts its own redis-server on a free port
    python bench/cache_tiers.py l2 memory  # only these sections (l2, invalidate,
                                           # cross-instance, memory)

1. L2 hit in-process against local Redis (RedisTier.get: GET + verify + decode) within 1.3x
   of one redis-py ``client.get`` of the same bytes, timed in the same rounds; the asyncio face
   (RedisTier.aget) within 1.3x of redis-py's asyncio ``client.get``. Beside them: the hit
   through redis-py's ``client.get`` instead of the tier's own GET on redis-py's connection
   (what that connection-level GET buys), a raw PING round trip (the loopback floor), and
   our GET and decode each timed alone.
2. Invalidating a tag that covers 100,000 entries <= 1 ms (generation bump: local, host file,
   fleet through Redis); baseline: deleting those 100,000 entries one by one from L1.
3. Cross-instance invalidation p99 <= 10 ms on loopback: invalidate() called here until another
   process (its own FleetGenerations and listener thread) has applied it; baseline: a raw
   PUBLISH -> SUBSCRIBE hop between the same two processes.
4. L1 memory within 5% of its byte bound under a flood of distinct keys (tracemalloc).

Every latency is the median of 5 repeats (the L2 pieces: of 9 rounds, timed in turn). The
exit status is 1 when any target is missed.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.generations import LocalGenerations
from scalekit.cache.hostgenerations import HostGenerations
from scalekit.cache.tiers.fleet import FleetGenerations
from scalekit.cache.tiers.memory import MemoryTier
from scalekit.cache.tiers.redis import NO_CLIENT_INFO, RedisConnections, RedisTier, entry_key
from scalekit.config import RedisConfig

REPEATS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def typical_entry(index: int = 0, body_bytes: int = 1200) -> CachedEntry:
    now = time.time()
    headers = (("content-type", "text/html; charset=utf-8"), ("content-length", str(body_bytes)),
               ("etag", f'"{index:032x}"'), ("cache-control", "public, max-age=300"),
               ("vary", "accept-encoding"), ("last-modified", "Wed, 21 Oct 2026 07:28:00 GMT"),
               ("x-request-id", f"{index:016x}"), ("date", "Wed, 21 Oct 2026 07:28:00 GMT"))
    return CachedEntry(status=200, headers=headers, body=bytes(body_bytes), request_time=now,
                       response_time=now, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=300.0,
                       tags=((f"product:{index}", 0), ("category:1", 0)), vary=("accept-encoding",),
                       secondary_key="gzip")


def median_per_op(operation: object, count: int) -> float:
    """Median over REPEATS of the mean seconds per call of ``operation`` run ``count`` times."""
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(count):
            operation()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) / count)
    return statistics.median(samples)


MISSED: list[str] = []


def show(name: str, figure: str, target: str, baseline: str, ok: bool) -> None:
    if not ok:
        MISSED.append(name)
    print(f"{name:<52} {figure:>10}   target {target:<10} baseline {baseline:<28} {'OK' if ok else 'MISSED'}")


# --------------------------------------------------------------------------- 1. L2 hit
L2_ROUNDS = 15  # the L2 pieces are timed in turn, round after round, so noise hits them alike
L2_CALLS = 300


class ClientGetConnections(RedisConnections):
    """The tier as it would be without its own GET: every lookup through redis-py's client."""

    def get_bytes(self, key: str) -> bytes | None:
        return self.sync().get(key)  # type: ignore[no-any-return]

    async def aget_bytes(self, key: str) -> bytes | None:
        return await self.async_client().get(key)  # type: ignore[no-any-return]


def timed_rounds(pieces: dict[str, object]) -> dict[str, list[float]]:
    """Microseconds per call of each piece in each round, the pieces timed in turn."""
    samples: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(L2_ROUNDS):
        for name, operation in pieces.items():
            start = time.perf_counter()
            for _ in range(L2_CALLS):
                operation()  # type: ignore[operator]
            samples[name].append((time.perf_counter() - start) / L2_CALLS * 1e6)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median of the per-round ratios: a round is timed in one stretch, so load that comes and
    goes on a shared machine weighs on both sides of a ratio alike."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline], strict=True))


def bench_l2_hit(port: int) -> None:
    """The L2 hit beside redis-py's GET of the same bytes, and what the hit is made of."""
    import asyncio

    import redis

    url = f"redis://127.0.0.1:{port}/0"
    config = RedisConfig(url=url, socket_timeout_seconds=1.0)
    codec = Codec(secret=b"bench-secret-0123456789")
    tier = RedisTier(RedisConnections(config), codec=codec)
    through_client = RedisTier(ClientGetConnections(config), codec=codec)
    key = "GET https://shop.example/products/42"
    tier.set(key, typical_entry())
    assert tier.get(key) is not None and through_client.get(key) is not None
    redis_key = entry_key(config.key_prefix, key)
    stored = tier.connections.get_bytes(redis_key)
    assert stored is not None
    client = redis.Redis.from_url(url, **NO_CLIENT_INFO)
    assert client.get(redis_key) == stored
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping() -> None:
        raw.sendall(b"*1\r\n$4\r\nPING\r\n")
        raw.recv(64)

    sync_samples = timed_rounds({
        "hit": lambda: tier.get(key),
        "redis-py": lambda: client.get(redis_key),
        "hit via client.get": lambda: through_client.get(key),
        "ping": ping,
        "get": lambda: tier.connections.get_bytes(redis_key),
        "decode": lambda: tier.codec.decode(key, stored),
    })
    us = medians(sync_samples)
    async_samples = asyncio.run(_async_l2_hit(tier, through_client, key, url))
    async_us = medians(async_samples)
    raw.close()
    client.close()
    tier.connections.close()
    through_client.connections.close()
    sync_ratio = ratio(sync_samples, "hit", "redis-py")
    show("L2 hit (GET + HMAC + decode, 1.2 KB body)", f"{sync_ratio:.2f}x", "<= 1.3x",
         f"{us['hit']:.0f} us vs redis-py GET {us['redis-py']:.0f} us", sync_ratio <= 1.3)
    async_ratio = ratio(async_samples, "aget", "redis-py")
    show("L2 hit, asyncio (RedisTier.aget)", f"{async_ratio:.2f}x", "<= 1.3x",
         f"{async_us['aget']:.0f} us vs redis-py GET {async_us['redis-py']:.0f} us",
         async_ratio <= 1.3)
    print(f"    without the tier's own GET (through redis-py's client.get): sync "
          f"{us['hit via client.get']:.0f} us "
          f"({ratio(sync_samples, 'hit via client.get', 'redis-py'):.2f}x), asyncio "
          f"{async_us['aget via client.get']:.0f} us "
          f"({ratio(async_samples, 'aget via client.get', 'redis-py'):.2f}x)")
    print(f"    network: raw PING RTT {us['ping']:.0f} us; asyncio streams PING RTT "
          f"{async_us['ping']:.0f} us; {len(stored)} bytes stored")
    print(f"    ours, each timed alone: GET {us['get']:.0f} us; decode (HMAC + msgpack + entry) "
          f"{us['decode']:.0f} us")


async def _async_l2_hit(tier: RedisTier, through_client: RedisTier, key: str,
                        url: str) -> dict[str, list[float]]:
    import asyncio

    import redis.asyncio

    host, port = url.split("//")[1].split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    client = redis.asyncio.Redis.from_url(url, **NO_CLIENT_INFO)
    redis_key = entry_key(tier.connections.prefix, key)

    async def ping() -> None:
        writer.write(b"*1\r\n$4\r\nPING\r\n")
        await reader.readuntil(b"\r\n")

    pieces = {"aget": lambda: tier.aget(key), "redis-py": lambda: client.get(redis_key),
              "aget via client.get": lambda: through_client.aget(key), "ping": ping}
    assert await tier.aget(key) is not None and await through_client.aget(key) is not None
    samples: dict[str, list[float]] = {name: [] for name in pieces}
    for _ in range(L2_ROUNDS):
        for name, operation in pieces.items():
            start = time.perf_counter()
            for _ in range(L2_CALLS):
                await operation()  # type: ignore[operator]
            samples[name].append((time.perf_counter() - start) / L2_CALLS * 1e6)
    writer.close()
    await client.aclose()
    await tier.connections.aclose()
    await through_client.connections.aclose()
    return samples


# --------------------------------------------------------------------------- 2. invalidation
def bench_invalidate_100k(port: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-generations-"))
    fleet = FleetGenerations(HostGenerations(directory / "generations.sqlite3"),
                             RedisConnections(RedisConfig(url=f"redis://127.0.0.1:{port}/0",
                                                          socket_timeout_seconds=1.0)))
    fleet.wait_connected(20)
    kinds = {"local": LocalGenerations(), "host file": HostGenerations(directory / "h.sqlite3"),
             "fleet (Redis)": fleet}
    for name, generations in kinds.items():
        memory = MemoryTier(max_bytes=1 << 33, max_entry_bytes=1 << 20)
        since = generations.sequence()
        stamp = generations.stamp(["category:1"], since)
        assert stamp is not None
        for index in range(100_000):
            memory.set(f"k{index}", CachedEntry(status=200, headers=(), body=b"x",
                                                request_time=time.time(), response_time=time.time(),
                                                corrected_initial_age_seconds=0.0,
                                                freshness_lifetime_seconds=300.0, tags=stamp))
        samples = []
        gc.collect()
        gc.freeze()  # the 100,000 entries just made are not the invalidation's garbage to walk
        for _ in range(REPEATS):
            start = time.perf_counter()
            generations.invalidate(["category:1"])
            samples.append(time.perf_counter() - start)
        gc.unfreeze()
        spent = statistics.median(samples)
        dead = sum(not generations.is_current(memory.get(f"k{i}")[0].tags) for i in range(0, 100_000, 97))
        assert dead == len(range(0, 100_000, 97)), "entries survived the invalidation"
        keys = [f"k{index}" for index in range(100_000)]
        start = time.perf_counter()
        for key in keys:
            memory.delete(key)
        by_delete = time.perf_counter() - start
        show(f"invalidate tag over 100,000 entries ({name})", f"{spent * 1e3:.3f} ms", "<= 1 ms",
             f"delete each: {by_delete * 1e3:.0f} ms", spent <= 1e-3)
        generations.close()
    fleet.connections.close()


# --------------------------------------------------------------------------- 3. cross-instance
RECEIVER = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from scalekit.cache.generations import LocalGenerations
from scalekit.cache.tiers.fleet import FleetGenerations
from scalekit.cache.tiers.redis import RedisConnections
from scalekit.config import RedisConfig
import redis
from scalekit.cache.tiers.redis import NO_CLIENT_INFO
arrivals = {}
class Recording(LocalGenerations):
    def apply(self, sequence, tags):
        now = time.time()
        for tag in tags:
            arrivals.setdefault(tag, now)
        return super().apply(sequence, tags)
url = sys.argv[2]
fleet = FleetGenerations(Recording(), RedisConnections(RedisConfig(url=url, socket_timeout_seconds=1.0)))
fleet.wait_connected(20)
raw_arrivals = {}
pubsub = redis.Redis.from_url(url, **NO_CLIENT_INFO).pubsub()
pubsub.subscribe("bench-raw")
def follow():
    for message in pubsub.listen():
        if message["type"] == "message":
            raw_arrivals[message["data"].decode()] = time.time()
threading.Thread(target=follow, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({"fleet": arrivals, "raw": raw_arrivals}), flush=True)
"""


def bench_cross_instance(port: int, count: int = 400) -> None:
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(ROOT), url],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None and receiver.stdin is not None
    assert receiver.stdout.readline().strip() == "ready"
    sender = FleetGenerations(LocalGenerations(), RedisConnections(
        RedisConfig(url=url, socket_timeout_seconds=1.0)))
    raw = redis.Redis.from_url(url, **NO_CLIENT_INFO)
    sent: dict[str, float] = {}
    raw_sent: dict[str, float] = {}
    for index in range(count):
        tag = f"t{index}"
        sent[tag] = time.time()
        sender.invalidate([tag])
        raw_sent[tag] = time.time()
        raw.publish("bench-raw", tag)
        time.sleep(0.002)
    time.sleep(0.5)
    receiver.stdin.write("done\n")
    receiver.stdin.flush()
    result = json.loads(receiver.stdout.readline())
    receiver.wait(10)
    delays = sorted(result["fleet"][tag] - sent[tag] for tag in sent if tag in result["fleet"])
    raw_delays = sorted(result["raw"][tag] - raw_sent[tag] for tag in raw_sent if tag in result["raw"])
    assert len(delays) == count, f"only {len(delays)} of {count} invalidations arrived"
    p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99) - 1]
    raw_p99 = raw_delays[int(len(raw_delays) * 0.99) - 1]
    show(f"cross-instance invalidation p99 ({count} tags)", f"{p99 * 1e3:.2f} ms", "<= 10 ms",
         f"p50 {p50 * 1e3:.2f} ms; raw pub/sub p99 {raw_p99 * 1e3:.2f} ms", p99 <= 10e-3)
    sender.connections.close()
    raw.close()


# --------------------------------------------------------------------------- 4. L1 memory
def bench_memory_bound(bound: int = 32 * 1024 * 1024, flood: int = 60_000) -> None:
    codec = Codec(compress_min_bytes=0)
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    tier = MemoryTier(max_bytes=bound, max_entry_bytes=1 << 20)
    for index in range(flood):
        key = f"GET https://shop.example/products/{index}?page={index % 7}"
        size = 200 + (index * 7919) % 3800  # 200 .. 4000 bytes, spread
        # Decoded from stored bytes, as an L2/L3 promotion would give it: every object fresh.
        entry = codec.decode(key, codec.encode(key, typical_entry(index, size)))[0]
        tier.set(key, entry)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    ratio = used / bound
    show(f"L1 memory vs bound after {flood:,} distinct keys", f"{ratio * 100:.1f} %",
         "95-105 %", f"accounted {tier.current_bytes / bound * 100:.1f} %, {len(tier):,} entries",
         0.95 <= ratio <= 1.05)


SECTIONS = {"l2": bench_l2_hit, "invalidate": bench_invalidate_100k,
            "cross-instance": bench_cross_instance, "memory": lambda _port: bench_memory_bound()}


def main() -> None:
    chosen = sys.argv[1:] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from {list(SECTIONS)}")
    process, port = start_redis()
    try:
        print(f"python {sys.version.split()[0]}, redis-server on 127.0.0.1:{port}, "
              f"{os.cpu_count()} cpus\n")
        for name, run in SECTIONS.items():
            if name in chosen:
                run(port)
    finally:
        process.terminate()
        process.wait(10)
    if MISSED:
        print(f"\nMISSED: {', '.join(MISSED)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
