"""A fleet under faults: real servers, one Redis, one proxy per instance, and a checker.

Used by tests/faults (a bounded run in CI) and bench/fleet_soak.py (seeded schedules, longer).

- :class:`FleetUnderTest` starts a Redis of its own, a :class:`TcpProxy` per instance, the
  shared item database, and the servers (gunicorn or uvicorn, each instance its own state
  directory: its own host). Every instance reaches Redis only through its proxy.
- :func:`random_schedule` draws faults per instance (stall, drop, blackhole, reset, delay) and
  stops of Redis itself (SIGSTOP), from a seed; :class:`Schedule` applies them on time.
- :func:`run_traffic` sends reads and writes to random instances from several threads and
  records each: when it started and ended, where, what it saw or what the write answered.
- :class:`Checker` fails a read that is older than (1) a write that ``invalidate()`` reported
  as applied by the instance read from (every live instance with reach "fleet"; the writer's
  host with reach "host"), or (2) a write the fleet accepted more than the staleness bound
  before the read started; a write queued while its instance could not reach Redis counts as
  accepted once that instance's proxy was healthy again, plus the listener's reconnect delay.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import httpx

from tests.cache.tiers.servers import RedisServer, TcpProxy
from tests.faults.app import create_database
from tests.servers import run_server

__all__ = ["Checker", "FleetUnderTest", "InstanceSpec", "Schedule", "random_schedule", "run_traffic"]

ITEMS = 4
FAULT_KINDS = ("stall", "drop", "blackhole", "reset", "delay")
RECONNECT_SECONDS = 1.0  # the listener's longest backoff between reconnections


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    server: Literal["gunicorn", "uvicorn"]
    workers: int = 1


@dataclass
class Instance:
    spec: InstanceSpec
    url: str
    proxy: TcpProxy


@dataclass
class Fault:
    start: float  # seconds after the schedule starts
    duration: float
    target: str  # an instance name, or "redis" (SIGSTOP of the server itself)
    kind: str


@dataclass
class Read:
    instance: str
    item: int
    started: float
    finished: float
    version: int
    status: str


@dataclass
class Write:
    instance: str
    item: int
    version: int
    returned: float
    reach: str
    acknowledged: bool
    queued: bool
    unacknowledged: list[str] = field(default_factory=list)


class FleetUnderTest:
    """Redis, proxies, database and servers for ``specs``; a context manager."""

    def __init__(self, root: Path, specs: list[InstanceSpec], *, staleness_seconds: float = 1.0,
                 heartbeat_seconds: float = 0.1, ack_timeout_seconds: float = 0.05) -> None:
        self.root = root
        self.specs = specs
        self.staleness_seconds = staleness_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.ack_timeout_seconds = ack_timeout_seconds
        self.instances: dict[str, Instance] = {}
        self.redis: RedisServer | None = None
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        try:
            self.redis = self._stack.enter_context(_closing(RedisServer().start()))
            database = self.root / "items.sqlite3"
            create_database(str(database), ITEMS)
            for spec in self.specs:
                proxy = self._stack.enter_context(_closing(TcpProxy(self.redis.port)))
                env = {
                    "FAULTS_DB": str(database),
                    "SCALEKIT_STATE_DIR": str(self.root / spec.name),
                    "SCALEKIT_ALLOWED_HOSTS": "*",
                    "SCALEKIT_REDIS_URL": proxy.url,
                    "SCALEKIT_REDIS_KEY_PREFIX": "faults:",
                    "SCALEKIT_CACHE_INVALIDATION_MAX_STALENESS_SECONDS": str(self.staleness_seconds),
                    "SCALEKIT_CACHE_INVALIDATION_HEARTBEAT_SECONDS": str(self.heartbeat_seconds),
                    "SCALEKIT_CACHE_INVALIDATION_ACK_TIMEOUT_SECONDS": str(self.ack_timeout_seconds),
                }
                target = "tests.faults.app:" + ("wsgi_app" if spec.server == "gunicorn" else "asgi_app")
                extra = ("--threads", "4") if spec.server == "gunicorn" else ()
                url = self._stack.enter_context(run_server(spec.server, target, env=env,
                                                           workers=spec.workers, extra_args=extra))
                self.instances[spec.name] = Instance(spec, url, proxy)
            self._wait_until_serving()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _wait_until_serving(self) -> None:
        """Every instance answers, and its listeners have joined (a first write acknowledged)."""
        deadline = time.monotonic() + 30.0
        with httpx.Client(timeout=10.0) as client:
            for instance in self.instances.values():
                while client.get(f"{instance.url}/item/0").status_code != 200:
                    assert time.monotonic() < deadline, f"{instance.spec.name} never answered"
                    time.sleep(0.05)
            # Listeners join when their process first runs its start-up: poke every worker.
            for _ in range(20):
                for instance in self.instances.values():
                    client.get(f"{instance.url}/item/0")
            time.sleep(2 * self.heartbeat_seconds + 0.5)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


@contextlib.contextmanager
def _closing(thing: RedisServer | TcpProxy) -> Iterator[RedisServer | TcpProxy]:
    try:
        yield thing
    finally:
        thing.close()


# --------------------------------------------------------------------------- faults


def random_schedule(seed: int, names: list[str], *, seconds: float) -> list[Fault]:
    """Faults for a run of ``seconds``, drawn from ``seed``: per instance one to three faults of
    0.1-2 s of any kind, and sometimes a 0.3 s stop of Redis itself."""
    chooser = random.Random(seed)
    faults: list[Fault] = []
    for name in names:
        for _ in range(chooser.randint(1, 3)):
            duration = chooser.choice([0.1, 0.3, 0.6, 1.2, 2.0])
            faults.append(Fault(start=chooser.uniform(0.5, seconds - duration - 0.5),
                                duration=duration, target=name, kind=chooser.choice(FAULT_KINDS)))
    if chooser.random() < 0.5:
        faults.append(Fault(start=chooser.uniform(0.5, seconds - 1.0), duration=0.3,
                            target="redis", kind="sigstop"))
    return sorted(faults, key=lambda fault: fault.start)


class Schedule:
    """Applies faults at their times from a thread; records when each target was faulty."""

    def __init__(self, fleet: FleetUnderTest, faults: list[Fault]) -> None:
        self.fleet = fleet
        self.faults = faults
        self.faulty: list[tuple[str, float, float]] = []  # (target, from, until) on our clock
        self._thread = threading.Thread(target=self._run, name="fault-schedule", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        events = sorted([(fault.start, "on", fault) for fault in self.faults]
                        + [(fault.start + fault.duration, "off", fault) for fault in self.faults],
                        key=lambda event: (event[0], event[1] == "on"))
        began: dict[int, float] = {}
        for at, what, fault in events:
            delay = self._started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if what == "on":
                began[id(fault)] = time.monotonic()
                self._switch(fault, on=True)
            else:
                self._switch(fault, on=False)
                self.faulty.append((fault.target, began[id(fault)], time.monotonic()))

    def _switch(self, fault: Fault, *, on: bool) -> None:
        if fault.target == "redis":
            assert self.fleet.redis is not None
            self.fleet.redis.pause() if on else self.fleet.redis.resume()
            return
        proxy = self.fleet.instances[fault.target].proxy
        if not on:
            proxy.restore()
        elif fault.kind == "drop":
            proxy.cut()
        elif fault.kind == "delay":
            proxy.delay(0.2)
        else:
            getattr(proxy, fault.kind)()

    def healthy_after(self, target: str, moment: float) -> float:
        """The first time at or after ``moment`` when neither ``target``'s proxy nor Redis was
        faulty (the end of the schedule if it never was)."""
        healthy = moment
        changed = True
        while changed:
            changed = False
            for name, begin, end in self.faulty:
                if name in (target, "redis") and begin <= healthy < end:
                    healthy, changed = end, True
        return healthy


# --------------------------------------------------------------------------- traffic


def run_traffic(fleet: FleetUnderTest, *, seconds: float, seed: int, threads: int = 4,
                write_ratio: float = 0.25) -> tuple[list[Read], list[Write]]:
    """Reads and writes of random items on random instances for ``seconds``."""
    reads: list[Read] = []
    writes: list[Write] = []
    names = list(fleet.instances)
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client_loop(number: int) -> None:
        chooser = random.Random(seed * 1000 + number)
        with httpx.Client(timeout=30.0) as client:
            while time.monotonic() < stop:
                name = chooser.choice(names)
                item = chooser.randrange(ITEMS)
                url = f"{fleet.instances[name].url}/item/{item}"
                started = time.monotonic()
                if chooser.random() < write_ratio:
                    # Half the writes post to the page's URI (URI and tag invalidated), half
                    # elsewhere (the tag is the only way to the page).
                    where = url if chooser.random() < 0.5 else url.replace("/item/", "/write/")
                    response = client.post(where)
                    assert response.status_code == 200, response.text
                    answer = response.json()
                    record = Write(name, item, int(answer["version"]), time.monotonic(),
                                   answer["reach"], bool(answer["acknowledged"]),
                                   bool(answer["queued"]), list(answer["unacknowledged"]))
                    with lock:
                        writes.append(record)
                else:
                    response = client.get(url)
                    assert response.status_code == 200, response.text
                    key, _, version = response.text.partition("=")
                    assert key == str(item), response.text
                    read = Read(name, item, started, time.monotonic(), int(version),
                                response.headers.get("cache-status", ""))
                    with lock:
                        reads.append(read)

    workers = [threading.Thread(target=client_loop, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return reads, writes


# --------------------------------------------------------------------------- the checker


@dataclass
class Checker:
    """Stale reads: after an acknowledged write, and beyond the bound after an accepted one."""

    staleness_seconds: float
    schedule: Schedule | None = None
    reads: list[Read] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)

    def accepted_at(self, write: Write) -> float:
        """When the fleet (Redis) had the write: at its return, or for one queued while its
        instance could not reach Redis, once that instance could again (plus a reconnect)."""
        if write.reach == "fleet" and not write.queued:
            return write.returned
        healthy = (self.schedule.healthy_after(write.instance, write.returned)
                   if self.schedule is not None else write.returned)
        return healthy + RECONNECT_SECONDS

    def stale_after_acknowledged(self) -> list[str]:
        found = []
        for write in self.writes:
            if not write.acknowledged:
                continue
            for read in self.reads:
                if (read.item == write.item and read.started > write.returned
                        and read.version < write.version
                        and (write.reach == "fleet" or read.instance == write.instance)):
                    found.append(f"{read} after acknowledged {write}")
        return found

    def stale_beyond_the_bound(self) -> list[str]:
        found = []
        for write in self.writes:
            deadline = self.accepted_at(write) + self.staleness_seconds
            for read in self.reads:
                if read.item == write.item and read.started > deadline and read.version < write.version:
                    found.append(f"{read} more than {self.staleness_seconds} s after {write}")
        return found

    def summary(self) -> str:
        return (f"{len(self.reads)} reads, {len(self.writes)} writes "
                f"({sum(w.acknowledged for w in self.writes)} acknowledged, "
                f"{sum(w.queued for w in self.writes)} queued); stale after acknowledged: "
                f"{len(self.stale_after_acknowledged())}; stale beyond the bound: "
                f"{len(self.stale_beyond_the_bound())}")
