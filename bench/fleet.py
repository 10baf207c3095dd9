"""What fleet invalidation costs as the fleet grows: a write, the propagation, Redis's CPU.

    python bench/fleet.py              # one Redis, then a 3-node Cluster (its own servers)
    python bench/fleet.py --quick      # fewer instances and invalidations

N lightweight instances (each a Follower driven by asyncio over its own connection: what one
process's listener thread does) run in a child process; this process invalidates through
FleetGenerations.ainvalidate, as an ASGI app would. For N = 1, 25, 100, 200, on one Redis and on
a 3-node Cluster:

- the cost of a write: ainvalidate() from call to return, waiting until every instance
  acknowledged (read-your-writes), beside the same call with ack_timeout_seconds = 0;
- how many writes were acknowledged by all N within the 50 ms wait;
- propagation: from the call until the last of the N instances applied it (p50, p99);
- Redis CPU per invalidation (INFO cpu, user + sys, summed over the nodes);
- under a burst (invalidations sent by 8 concurrent writers), log reads per invalidation per
  instance: below 1 means the log batches them.

Targets (exit 1 if one is missed), at N = 100, on both: at least 99% of writes acknowledged by
every instance within the wait; propagation p99 <= 50 ms; Redis CPU <= 60 us per invalidation
per instance (its lease renewal with acknowledgement, and log read: one pipelined round trip
on a plain Redis, two on a Cluster). N = 200 is shown beside it. The instances run in one child
process per core: on a two-core machine a hundred of them share two interpreters, which is
most of the propagation time measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis
import redis.asyncio
import redis.cluster

from scalekit.cache.generations import LocalGenerations
from scalekit.cache.tiers.fleet import FleetGenerations
from scalekit.cache.tiers.fleetlog import Follower, Poll, Replay, Resync
from scalekit.cache.tiers.fleetredis import FleetKeys, FleetScripts, arun, log_client
from scalekit.cache.tiers.redis import NO_CLIENT_INFO, RedisConnections
from scalekit.config import RedisConfig
from tests.cache.tiers.servers import RedisCluster, RedisServer

STALENESS_SECONDS = 3.0
HEARTBEAT_SECONDS = 0.5
ACKED_TARGET = 0.99
PROPAGATION_P99_TARGET_MS = 50.0
CPU_PER_INSTANCE_TARGET_US = 60.0
JUDGED_AT = 100  # instances; 200 is shown beside it
CHILDREN = max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- the instances (child)
class Recording(LocalGenerations):
    """Generations that note when each tag was first applied here."""

    def __init__(self, arrivals: dict[str, float]) -> None:
        super().__init__()
        self.arrivals = arrivals

    def apply(self, sequence: int, tags: Any) -> bool:
        now = time.time()
        for tag in tags:
            self.arrivals.setdefault(tag, now)
        return super().apply(sequence, tags)


def log_url(url: str, cluster: bool, keys: FleetKeys) -> str:
    """Where the instances poll: on a Cluster, as the listener does (log_client), the node that
    holds the log's slot."""
    if not cluster:
        return url
    probe = redis.cluster.RedisCluster.from_url(url, **NO_CLIENT_INFO)
    node = log_client(probe, keys).get_connection_kwargs()
    probe.close()
    return f"redis://{node['host']}:{node['port']}/0"


async def follow(url: str, keys: FleetKeys, name: str, arrivals: dict[str, float],
                 reads: list[int], ready: asyncio.Event, stop: asyncio.Event) -> None:
    """One instance: the listener's steps (fleet.py) on an asyncio connection of its own."""
    options = {**NO_CLIENT_INFO, "socket_timeout": HEARTBEAT_SECONDS + 2.0}
    client: Any = redis.asyncio.Redis.from_url(url, **options)
    scripts = FleetScripts(client, keys)
    follower = Follower(Recording(arrivals), max_staleness_seconds=STALENESS_SECONDS,
                        renew_seconds=HEARTBEAT_SECONDS)
    try:
        while not stop.is_set():
            step = follower.next_step(time.monotonic())
            match step:
                case Resync():
                    epoch, sequence, remote = await arun(scripts.resync(
                        floor=step.floor, epoch_candidate=step.epoch_candidate,
                        recovering=step.recovering, instance=name, lease_seconds=STALENESS_SECONDS))
                    follower.resynced(sent_at=time.monotonic(), epoch=epoch, sequence=sequence,
                                      remote=remote)
                case Replay():
                    raise AssertionError("the bench's instances never invalidate")
                case Poll():
                    sent = time.monotonic()
                    polled = await arun(scripts.poll(epoch=step.epoch, instance=name,
                                                     after=step.after,
                                                     lease_seconds=STALENESS_SECONDS,
                                                     block_seconds=HEARTBEAT_SECONDS,
                                                     renew=step.renew))
                    if polled.head is None:
                        follower.epoch_changed()
                        continue
                    ready.set()
                    reads[0] += 1
                    follower.polled(sent_at=sent, entries=polled.entries, renewed=step.renew,
                                    complete=polled.complete, head=polled.head)
    finally:
        await client.aclose()


async def instances_main(url: str, cluster: bool, prefix: str, count: int, first: int) -> None:
    keys = FleetKeys.of(prefix, "invalidations")
    arrivals = [dict[str, float]() for _ in range(count)]
    reads = [[0] for _ in range(count)]
    readies = [asyncio.Event() for _ in range(count)]
    stop = asyncio.Event()
    url = log_url(url, cluster, keys)
    tasks = [asyncio.create_task(follow(url, keys, f"bench-{first + index}",
                                        arrivals[index], reads[index], readies[index], stop))
             for index in range(count)]
    await asyncio.gather(*(ready.wait() for ready in readies))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() == "report":
            print(json.dumps({"arrivals": arrivals, "reads": sum(r[0] for r in reads)}), flush=True)
        else:
            break
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- the writer (parent)
class Instances:
    """``count`` instances spread over one child process per core (one process playing them
    all would measure its own Python, not the protocol: a real instance has a process)."""

    def __init__(self, url: str, cluster: bool, prefix: str, count: int) -> None:
        shares = [len(range(index, count, CHILDREN)) for index in range(min(CHILDREN, count))]
        self.processes = [subprocess.Popen(
            [sys.executable, __file__, "--instances", str(share), "--url", url, "--prefix", prefix,
             "--first", str(sum(shares[:index]))] + (["--cluster"] if cluster else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for index, share in enumerate(shares)]
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line == "ready", f"the instances did not start: {line!r}"

    def report(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"arrivals": [], "reads": 0}
        for process in self.processes:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("report\n")
            process.stdin.flush()
            part = json.loads(process.stdout.readline())
            merged["arrivals"] += part["arrivals"]
            merged["reads"] += part["reads"]
        return merged

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("stop\n")
            process.stdin.flush()
        for process in self.processes:
            process.wait(timeout=60)


def command_stats(ports: list[int]) -> dict[str, tuple[int, int]]:
    """Every command's (calls, usec) summed over the nodes (INFO commandstats: the time inside
    commands, scripts' inner calls counted in both; not the I/O around them)."""
    totals: dict[str, tuple[int, int]] = {}
    for port in ports:
        for name, stats in redis.Redis(port=port, **NO_CLIENT_INFO).info("commandstats").items():
            calls, usec = totals.get(name, (0, 0))
            totals[name] = (calls + int(stats["calls"]), usec + int(stats["usec"]))
    return totals


def redis_cpu_seconds(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        info = redis.Redis(port=port, **NO_CLIENT_INFO).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


async def writes(writer: FleetGenerations, tags: list[str], *, spacing: float,
                 concurrency: int = 1) -> tuple[dict[str, float], list[float], int]:
    """Invalidate each of ``tags``: (sent times, call durations, acknowledged count)."""
    sent: dict[str, float] = {}
    durations: list[float] = []
    acknowledged = 0
    queue = list(tags)

    async def one_writer() -> None:
        nonlocal acknowledged
        while queue:
            tag = queue.pop()
            sent[tag] = time.time()
            start = time.perf_counter()
            result = await writer.ainvalidate([tag])
            durations.append(time.perf_counter() - start)
            acknowledged += result.acknowledged
            if spacing:
                await asyncio.sleep(spacing)

    await asyncio.gather(*(one_writer() for _ in range(concurrency)))
    return sent, durations, acknowledged


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def measure(url: str, cluster: bool, ports: list[int], count: int, invalidations: int
                  ) -> tuple[dict[str, float], bool]:
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    instances = Instances(url, cluster, prefix, count)
    config = RedisConfig(url=url, cluster=cluster, key_prefix=prefix, socket_timeout_seconds=1.0)
    writer = FleetGenerations(LocalGenerations(), RedisConnections(config),
                              max_staleness_seconds=STALENESS_SECONDS, ack_timeout_seconds=0.05)
    free = FleetGenerations(LocalGenerations(), RedisConnections(config),
                            max_staleness_seconds=STALENESS_SECONDS, ack_timeout_seconds=0.0)
    try:
        await writes(writer, [f"warm{i}" for i in range(10)], spacing=0.01)
        cpu_before = redis_cpu_seconds(ports)
        stats_before = command_stats(ports)
        tags = [f"t{i}" for i in range(invalidations)]
        sent, durations, acknowledged = await writes(writer, tags, spacing=0.02)
        await asyncio.sleep(0.5)
        cpu = redis_cpu_seconds(ports) - cpu_before
        stats_after = command_stats(ports)
        _, free_durations, _ = await writes(free, [f"f{i}" for i in range(invalidations)],
                                            spacing=0.02)
        reads_before = instances.report()["reads"]
        burst = [f"b{i}" for i in range(invalidations * 2)]
        await writes(free, burst, spacing=0.0, concurrency=8)
        await asyncio.sleep(0.5)
        report = instances.report()
        burst_reads = (report["reads"] - reads_before) / count / len(burst)
    finally:
        instances.close()
        for generations in (writer, free):
            generations.close()  # their listeners leave before the servers go
            await generations.connections.aclose()
            generations.connections.close()
    delays = []
    for tag, at in sent.items():
        applied = [arrivals.get(tag) for arrivals in report["arrivals"]]
        if all(value is not None for value in applied):
            delays.append(max(applied) - at)  # type: ignore[type-var]
    figures = {
        "write p50 ms": statistics.median(durations) * 1e3,
        "write p99 ms": percentile(durations, 0.99) * 1e3,
        "write without waiting p50 ms": statistics.median(free_durations) * 1e3,
        "acknowledged": acknowledged / len(tags),
        "propagation p50 ms": statistics.median(delays) * 1e3 if delays else float("inf"),
        "propagation p99 ms": percentile(delays, 0.99) * 1e3 if delays else float("inf"),
        "redis cpu us per invalidation": cpu / len(tags) * 1e6,
        "log reads per invalidation per instance (burst)": burst_reads,
    }
    commands = {name.removeprefix("cmdstat_"): ((calls - stats_before.get(name, (0, 0))[0]) / len(tags),
                                                (usec - stats_before.get(name, (0, 0))[1]) / len(tags))
                for name, (calls, usec) in stats_after.items()
                if calls != stats_before.get(name, (0, 0))[0]}
    judged = count == JUDGED_AT
    ok = not judged or (figures["acknowledged"] >= ACKED_TARGET
                        and figures["propagation p99 ms"] <= PROPAGATION_P99_TARGET_MS
                        and figures["redis cpu us per invalidation"] / count <= CPU_PER_INSTANCE_TARGET_US)
    return figures, commands, ok


def show_commands(commands: dict[str, tuple[float, float]]) -> None:
    """Per invalidation: each command's calls and microseconds inside Redis (scripts include
    their inner commands, which are listed too)."""
    parts = [f"{name} {calls:.1f}x {usec:.0f}us" for name, (calls, usec)
             in sorted(commands.items(), key=lambda item: -item[1][1]) if name not in ("info",)]
    print("         per invalidation: " + ", ".join(parts))


def show(label: str, count: int, figures: dict[str, float], ok: bool) -> None:
    print(f"{label:8} N={count:<4} write p50 {figures['write p50 ms']:6.2f} ms "
          f"p99 {figures['write p99 ms']:6.2f} ms (no wait {figures['write without waiting p50 ms']:5.2f}) "
          f"| acked {figures['acknowledged'] * 100:5.1f} % "
          f"| propagation p50 {figures['propagation p50 ms']:6.2f} p99 {figures['propagation p99 ms']:6.2f} ms "
          f"| redis cpu {figures['redis cpu us per invalidation']:7.0f} us/inv "
          f"({figures['redis cpu us per invalidation'] / count:5.1f}/instance) "
          f"| burst reads {figures['log reads per invalidation per instance (burst)']:.2f}"
          + ("" if count != JUDGED_AT else ("  OK" if ok else "  MISSED")))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--instances", type=int)  # child mode
    parser.add_argument("--url")
    parser.add_argument("--prefix")
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--counts", help="instances to run, e.g. 100,200 (default: 1,25,100,200)")
    parser.add_argument("--only", choices=["redis", "cluster"], help="one deployment only")
    args = parser.parse_args()
    if args.instances is not None:
        asyncio.run(instances_main(args.url, args.cluster, args.prefix, args.instances, args.first))
        return 0
    counts = [1, 25, 100] if args.quick else [1, 25, 100, 200]
    if args.counts:
        counts = [int(count) for count in args.counts.split(",")]
    invalidations = 50 if args.quick else 150
    print(f"targets at N = {JUDGED_AT}: acknowledged by all >= {ACKED_TARGET * 100:.0f} %, propagation "
          f"p99 <= {PROPAGATION_P99_TARGET_MS:.0f} ms, Redis CPU <= {CPU_PER_INSTANCE_TARGET_US:.0f} "
          "us per invalidation per instance\n")
    failed = False
    if args.only != "cluster":
        failed |= bench_redis(counts, invalidations)
    if args.only != "redis":
        failed |= bench_cluster(counts, invalidations)
    return 1 if failed else 0


def bench_redis(counts: list[int], invalidations: int) -> bool:
    """One Redis; True if a target was missed."""
    failed = False
    server = RedisServer().start()
    try:
        for count in counts:
            figures, commands, ok = asyncio.run(measure(server.url, False, [server.port], count,
                                                        invalidations))
            show("redis", count, figures, ok)
            show_commands(commands)
            failed |= not ok
    finally:
        server.close()
    return failed


def bench_cluster(counts: list[int], invalidations: int) -> bool:
    """A 3-node Cluster; True if a target was missed."""
    failed = False
    cluster = RedisCluster().start()
    try:
        ports = [node.port for node in cluster.nodes]
        for count in counts:
            figures, commands, ok = asyncio.run(measure(cluster.url, True, ports, count, invalidations))
            show("cluster", count, figures, ok)
            show_commands(commands)
            failed |= not ok
    finally:
        cluster.close()
    return failed


if __name__ == "__main__":
    sys.exit(main())
