"""Hypothesis stateful test of the fleet invalidation protocol, on a real Redis, under faults.

Two instances, each a sans-I/O :class:`Follower` over generations that a restart keeps (as the
host's generations file does; that file has tests of its own), with a disk of entries that
outlives restarts too. The test is every instance's driver: it runs each step of the
protocol against Redis (the real scripts) itself, so it can partition an instance (its calls
never reach Redis), drop a reply (Redis did it, the instance never hears), delay a poll's reply
or deliver it twice, make Redis lose its state, restart an instance, and move the one clock.

An entry records, for each of its tags, the version of the data it was computed from. Every
write bumps its tag's version and invalidates the tag on the writer. Held after every step —
no instance serves an entry that is stale because of:

- its own write (whatever Redis did);
- a write whose ``invalidate()`` reported it as having applied it (acknowledged);
- a write Redis accepted ``max_staleness_seconds`` ago or more (the bound);

and after healing everything and letting the instances run: nothing stale is served anywhere,
every queue is empty (no invalidation is ever lost).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from scalekit.cache.generations import LocalGenerations, fleet_generation
from scalekit.cache.tiers.fleetlog import Follower, LogEntry, Poll, Replay, Resync
from scalekit.cache.tiers.fleetredis import FleetKeys, FleetScripts, run
from scalekit.cache.tiers.redis import NO_CLIENT_INFO

from .servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TAGS = ("a", "b")
INSTANCES = 2
STALENESS_SECONDS = 1.0
RENEW_SECONDS = 0.3  # polls between renewals acknowledge with plain commands, no script
SERVER: RedisServer | None = None
_examples = itertools.count()


@dataclass
class Write:
    """One write to a tag: the data version it made, and how far its invalidation got."""

    tag: str
    version: int
    writer: int
    applied_at_writer: bool = True
    committed_at: float | None = None  # when Redis accepted it (directly or by a replay)
    acknowledged_by: set[int] = field(default_factory=set)
    queued_at_writer: bool = False


@dataclass
class HostFile:
    """What a host keeps across a restart of its process: generations, queue, epoch."""

    generations: dict[str, int] = field(default_factory=dict)
    sequence: int = 0
    unpublished: set[str] = field(default_factory=set)
    epoch: str | None = None


class KeptGenerations(LocalGenerations):
    """Generations written through to a :class:`HostFile` after every change."""

    def __init__(self, kept: HostFile) -> None:
        super().__init__()
        self.kept = kept
        self._generations.update(kept.generations)
        self._sequence = kept.sequence

    def _keep(self) -> None:
        self.kept.generations = dict(self._generations)
        self.kept.sequence = self._sequence

    def apply(self, sequence: int, tags: Iterable[str]) -> bool:
        changed = super().apply(sequence, tags)
        self._keep()
        return changed

    def apply_here(self, tags: Iterable[str]) -> list[str]:
        done = super().apply_here(tags)
        self._keep()
        return done

    def remember_unpublished(self, tags: Iterable[str]) -> None:
        self.kept.unpublished.update(tags)

    def forget_unpublished(self, tags: Iterable[str]) -> None:
        self.kept.unpublished.difference_update(tags)

    def unpublished(self) -> set[str]:
        return set(self.kept.unpublished)

    def fleet_epoch(self) -> str | None:
        return self.kept.epoch

    def record_fleet_epoch(self, epoch: str) -> None:
        self.kept.epoch = epoch


@dataclass
class Entry:
    stamp: tuple[tuple[str, int], ...]
    versions: dict[str, int]


@dataclass
class Instance:
    slot: int
    incarnation: int
    generations: KeptGenerations
    follower: Follower
    disk: dict[str, Entry] = field(default_factory=dict)
    partitioned: bool = False
    pending_request: tuple[int, tuple[str, ...], dict[str, int]] | None = None
    delayed_poll: tuple[float, list[LogEntry], bool, int, bool] | None = None
    lease_renewed_at: float = float("-inf")  # when Redis last renewed its lease (the test's clock)

    @property
    def name(self) -> str:
        return f"i{self.slot}-{self.incarnation}"


class FleetProtocolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert SERVER is not None
        self.now = 1_000.0
        self.client = redis.Redis.from_url(SERVER.url, **NO_CLIENT_INFO)
        self.keys = FleetKeys.of(f"protocol{next(_examples)}:", "invalidations")
        self.scripts = FleetScripts(self.client, self.keys)
        self.hosts = [HostFile() for _ in range(INSTANCES)]
        self.versions = dict.fromkeys(TAGS, 0)
        self.writes: list[Write] = []
        self.keys_made = itertools.count()
        self.instances = [self._start(slot, 0) for slot in range(INSTANCES)]

    # ----------------------------------------------------------------- instances
    def _start(self, slot: int, incarnation: int) -> Instance:
        generations = KeptGenerations(self.hosts[slot])
        instance = Instance(slot, incarnation, generations,
                            Follower(generations, max_staleness_seconds=STALENESS_SECONDS,
                                     renew_seconds=RENEW_SECONDS))
        instance.follower.on_lost_track = instance.disk.clear
        return instance

    def teardown(self) -> None:
        self.client.delete(*self.keys.all)
        self.client.close()

    def _served(self, instance: Instance, entry: Entry) -> bool:
        return (instance.follower.is_trusted(self.now)
                and instance.generations.is_current(entry.stamp))

    # ----------------------------------------------------------------- the listener's steps
    def _step(self, instance: Instance, *, drop_reply: bool = False, delay: bool = False) -> None:
        """One step of ``instance``'s listener; a partitioned one reaches nothing."""
        if instance.partitioned:
            return
        step = instance.follower.next_step(self.now)
        match step:
            case Resync():
                epoch, sequence, remote = run(self.scripts.resync(
                    floor=step.floor, epoch_candidate=step.epoch_candidate,
                    recovering=step.recovering, instance=instance.name,
                    lease_seconds=STALENESS_SECONDS))
                instance.lease_renewed_at = self.now
                if not drop_reply:
                    instance.follower.resynced(sent_at=self.now, epoch=epoch, sequence=sequence,
                                               remote=remote)
            case Replay():
                counts = instance.follower.outbox_counts(step.tags)
                sequence = run(self.scripts.invalidate(
                    list(step.tags), origin=instance.name, sent_at=self.now, floor=step.floor,
                    epoch_candidate="replayed")).sequence
                self._committed(instance.slot, step.tags)
                if not drop_reply:
                    instance.follower.published(step.tags, sequence, counts=counts)
            case Poll():
                polled = run(self.scripts.poll(epoch=step.epoch, instance=instance.name,
                                               after=step.after, lease_seconds=STALENESS_SECONDS,
                                               block_seconds=None, renew=step.renew))
                if polled.head is None:
                    if not drop_reply:
                        instance.follower.epoch_changed()
                    return
                if step.renew:
                    instance.lease_renewed_at = self.now
                assert not polled.malformed
                if delay:
                    instance.delayed_poll = (self.now, polled.entries, polled.complete,
                                             polled.head, step.renew)
                elif not drop_reply:
                    instance.follower.polled(sent_at=self.now, entries=polled.entries,
                                             complete=polled.complete, head=polled.head,
                                             renewed=step.renew)

    def _committed(self, writer: int, tags: tuple[str, ...]) -> None:
        """A replay of ``tags`` by ``writer`` reached Redis: its queued writes are accepted."""
        for write in self.writes:
            if write.writer == writer and write.tag in tags and write.queued_at_writer:
                write.queued_at_writer = False
                if write.committed_at is None:
                    write.committed_at = self.now

    # ----------------------------------------------------------------- rules
    @initialize()
    def join(self) -> None:
        """Every instance joins and hears the log once (most runs start from there)."""
        for instance in self.instances:
            self._step(instance)
            self._step(instance)

    @rule(slot=st.integers(0, INSTANCES - 1), tag=st.sampled_from(TAGS))
    def store(self, slot: int, tag: str) -> None:
        """A miss answered at once (no invalidation can overlap it)."""
        self.begin_request(slot, {tag})
        self.finish_request(slot)

    @rule(slot=st.integers(0, INSTANCES - 1), tags=st.sets(st.sampled_from(TAGS), min_size=1))
    def begin_request(self, slot: int, tags: set[str]) -> None:
        """A miss starts: generations are read before the origin computes the page."""
        instance = self.instances[slot]
        snapshot = {tag: self.versions[tag] for tag in sorted(tags)}
        instance.pending_request = (instance.generations.sequence(), tuple(sorted(tags)), snapshot)

    @rule(slot=st.integers(0, INSTANCES - 1))
    def finish_request(self, slot: int) -> None:
        """The origin answered: the page is stored unless its tags moved meanwhile."""
        instance = self.instances[slot]
        if instance.pending_request is None:
            return
        since, tags, snapshot = instance.pending_request
        instance.pending_request = None
        stamp = instance.generations.stamp(tags, since)
        if stamp is not None:
            instance.disk[f"k{next(self.keys_made)}"] = Entry(stamp, snapshot)

    @rule(slot=st.integers(0, INSTANCES - 1), tag=st.sampled_from(TAGS),
          outcome=st.sampled_from(["answered", "reply lost"]))
    def write(self, slot: int, tag: str, outcome: str) -> None:
        """The data of ``tag`` changes through ``slot``, which then invalidates it."""
        instance = self.instances[slot]
        self.versions[tag] += 1
        write = Write(tag=tag, version=self.versions[tag], writer=slot)
        self.writes.append(write)
        if instance.partitioned:
            self._offline(instance, write)
            return
        generations = instance.generations
        recorded = run(self.scripts.invalidate(
            [tag], origin=instance.name, sent_at=self.now,
            floor=generations.sequence() >> 32, epoch_candidate="by-a-writer"))
        sequence, epoch = recorded.sequence, recorded.epoch
        write.committed_at = self.now
        if outcome == "reply lost":
            self._offline(instance, write)  # it cannot tell: applied here, queued, replayed
            return
        generations.apply(fleet_generation(sequence), [tag])
        report = run(self.scripts.acked(sequence, instance=instance.name, epoch=epoch))
        if not report.lost:
            # The count the write's own script took never says fewer than are missing after it
            # (acknowledgements only grow, expired members only leave): a writer told "none"
            # would stop waiting for an instance that has not applied its write.
            assert len(report.missing) <= recorded.unacked[0]
        if not report.lost and report.recovered_age_seconds is None:
            waiting = set(report.missing)
            write.acknowledged_by = {other.slot for other in self.instances
                                     if other.name not in waiting and other.slot != slot}

    def _offline(self, instance: Instance, write: Write) -> None:
        instance.generations.apply_here([write.tag])
        instance.follower.queue([write.tag])
        write.queued_at_writer = True

    @rule(slot=st.integers(0, INSTANCES - 1),
          fault=st.sampled_from(["none", "none", "none", "reply lost", "reply delayed"]))
    def listener_step(self, slot: int, fault: str) -> None:
        self._step(self.instances[slot], drop_reply=fault == "reply lost",
                   delay=fault == "reply delayed")

    @rule()
    def everyone_listens(self) -> None:
        """Every instance takes one step (the common case, between the faults)."""
        for instance in self.instances:
            self._step(instance)

    @rule(slot=st.integers(0, INSTANCES - 1),
          kind=st.sampled_from(["partition", "heal", "restart", "deliver delayed poll",
                                "deliver delayed poll twice", "Redis loses its state",
                                "Redis trims the log", "its lease lapses"]))
    def fault(self, slot: int, kind: str) -> None:
        """One fault (a single rule, so faults do not crowd out the steps between them)."""
        instance = self.instances[slot]
        match kind:
            case "partition":
                instance.partitioned = True
            case "heal":
                instance.partitioned = False
            case "restart":
                self.restart(slot)
            case "deliver delayed poll" | "deliver delayed poll twice":
                self.deliver_delayed_poll(slot, twice=kind.endswith("twice"))
            case "Redis loses its state":
                self.client.delete(*self.keys.all)
            case "Redis trims the log":  # entries vanish, the state stays (trimmed or evicted)
                self.client.xtrim(self.keys.log, maxlen=0)
            case "its lease lapses":
                self.lapse(instance)

    def deliver_delayed_poll(self, slot: int, *, twice: bool) -> None:
        instance = self.instances[slot]
        if instance.delayed_poll is None:
            return
        sent_at, entries, complete, head, renewed = instance.delayed_poll
        instance.delayed_poll = None
        for _ in range(2 if twice else 1):
            instance.follower.polled(sent_at=sent_at, entries=entries, complete=complete, head=head,
                                     renewed=renewed)

    def lapse(self, instance: Instance) -> None:
        """What Redis does once a lease is older than its length (on Redis's clock, which the
        test cannot move): the member is pruned, and writers stop waiting for it."""
        if self.now < instance.lease_renewed_at + STALENESS_SECONDS:
            return
        for key in (self.keys.acks, self.keys.leases):
            for name in self.client.zrange(key, 0, -1):
                if name.decode().rpartition("@")[0] == instance.name:
                    self.client.zrem(key, name)

    def restart(self, slot: int) -> None:
        """The process restarts on the same host: the file and the disk entries survive."""
        old = self.instances[slot]
        new = self._start(slot, old.incarnation + 1)
        new.disk.update(old.disk)
        new.partitioned = old.partitioned
        self.instances[slot] = new

    @rule(seconds=st.sampled_from([0.1, RENEW_SECONDS + 0.1, STALENESS_SECONDS + 0.1]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: len(self.writes) > 0)
    @rule()
    def heal_everything_and_settle(self) -> None:
        """After the heal and the bound: nothing stale anywhere, nothing queued."""
        for instance in self.instances:
            instance.partitioned = False
            instance.delayed_poll = None
        self.now += STALENESS_SECONDS
        for _ in range(6):  # resync, replay, and two polls to hear the others' replays
            for instance in self.instances:
                for _ in range(4):
                    self._step(instance)
        for instance in self.instances:
            assert instance.follower.pending == 0, f"{instance.name} still holds queued invalidations"
            for key, entry in instance.disk.items():
                stale = [tag for tag, version in entry.versions.items()
                         if version < self.versions[tag]]
                assert not (stale and self._served(instance, entry)), (
                    f"{instance.name} serves {key}, stale for {stale}, after the heal")

    # ----------------------------------------------------------------- the invariant
    @invariant()
    def nothing_stale_is_served_past_what_was_promised(self) -> None:
        for instance in self.instances:
            for key, entry in instance.disk.items():
                if not self._served(instance, entry):
                    continue
                for write in self.writes:
                    if write.version <= entry.versions.get(write.tag, write.version):
                        continue  # the entry was computed after this write (or lacks its tag)
                    if write.writer == instance.slot:
                        raise AssertionError(f"{instance.name} serves {key} after its own write {write}")
                    if instance.slot in write.acknowledged_by:
                        raise AssertionError(f"{instance.name} serves {key} after acknowledging {write}")
                    if write.committed_at is not None and self.now >= write.committed_at + STALENESS_SECONDS:
                        raise AssertionError(f"{instance.name} serves {key} past the bound of {write}")


def test_the_protocol_holds_its_promises_under_faults(redis_server: RedisServer) -> None:
    """200 runs of up to 40 steps here (~10 s); the soak (bench/fleet_soak.py) sets
    SCALEKIT_PROTOCOL_EXAMPLES to run thousands."""
    global SERVER
    SERVER = redis_server
    examples = int(os.environ.get("SCALEKIT_PROTOCOL_EXAMPLES", "200"))
    run_state_machine_as_test(FleetProtocolMachine, settings=settings(
        max_examples=examples, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


# Sequences each promise has been seen to need (run exactly, the invariant after every step);
# the random runs above explore around them.
SCENARIOS = {
    "a stale entry is served no longer than the bound": [
        ("store", 0, "a"), ("write", 1, "a", "answered"), ("time_passes", 1.1),
        ("listener_step", 0, "none")],
    "an acknowledgement means the instance applied it": [
        ("store", 0, "a"), ("everyone_listens",), ("write", 1, "a", "answered"),
        ("listener_step", 0, "none"), ("write", 1, "a", "answered")],
    "a log that lost its entries is not trusted": [
        ("store", 0, "a"), ("fault", 0, "partition"), ("write", 1, "a", "answered"),
        ("fault", 0, "Redis trims the log"), ("fault", 0, "heal"), ("listener_step", 0, "none"),
        ("time_passes", 1.1), ("listener_step", 0, "none")],
    "a gap in the log is not trusted": [
        ("store", 0, "a"), ("fault", 0, "partition"), ("write", 1, "a", "answered"),
        ("time_passes", 1.1), ("fault", 0, "Redis trims the log"), ("write", 1, "b", "answered"),
        ("fault", 0, "heal"), ("listener_step", 0, "none")],
    "Redis losing its state drops what an instance holds": [
        ("store", 0, "a"), ("write", 1, "a", "answered"), ("fault", 1, "partition"),
        ("fault", 0, "Redis loses its state"), ("listener_step", 0, "none"),
        ("listener_step", 0, "none"), ("time_passes", 1.1), ("listener_step", 0, "none")],
    "writes after a stall are each followed by a fresh read (the first report)": [
        ("fault", 0, "partition"), ("write", 0, "b", "answered"), ("write", 0, "a", "answered"),
        ("fault", 0, "heal"), ("store", 0, "a"), ("write", 0, "a", "answered"), ("store", 0, "a"),
        ("write", 0, "a", "answered"), ("listener_step", 0, "none"), ("store", 0, "a"),
        ("write", 0, "a", "answered")],
    "polls between renewals never trust past the lease": [
        ("store", 0, "a"), ("time_passes", 0.4), ("listener_step", 0, "none"),
        ("time_passes", 0.1), ("listener_step", 0, "none"), ("time_passes", 0.1),
        ("listener_step", 0, "none"), ("time_passes", 0.9), ("fault", 0, "its lease lapses"),
        ("write", 1, "a", "answered")],
    "a delayed, duplicated poll and a restart keep every promise": [
        ("store", 0, "a"), ("listener_step", 0, "reply delayed"), ("write", 1, "a", "reply lost"),
        ("fault", 0, "deliver delayed poll twice"), ("fault", 0, "restart"), ("time_passes", 1.1),
        ("everyone_listens",), ("everyone_listens",)],
}


@pytest.mark.parametrize("steps", [pytest.param(steps, id=name) for name, steps in SCENARIOS.items()])
def test_scenario(redis_server: RedisServer, steps: list[tuple[Any, ...]]) -> None:
    global SERVER
    SERVER = redis_server
    machine = FleetProtocolMachine()
    try:
        machine.join()
        for name, *args in steps:
            getattr(machine, name)(*args)
            machine.nothing_stale_is_served_past_what_was_promised()
        machine.heal_everything_and_settle()
    finally:
        machine.teardown()
