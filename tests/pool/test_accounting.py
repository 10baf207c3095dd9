"""The checkout path's primitives: slots, histogram handles, the socket poll of the pre-ping."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from scalekit.instruments import DURATION_BUCKETS_SECONDS
from scalekit.pool import engines
from scalekit.pool.accounting import ConnectionSlots, histogram_observer
from scalekit.pool.engines import _is_quiet


@pytest.fixture(params=["poll holding the GIL", "select.poll"])
def poll_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the liveness check polls: libc's poll() through ctypes, and the fallback."""
    if request.param == "select.poll":
        monkeypatch.setattr(engines, "_held_poll", None)
    elif engines._held_poll is None:
        pytest.skip("no libc poll() on this platform")
    return str(request.param)


def test_slots_count_like_a_semaphore() -> None:
    slots = ConnectionSlots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    assert not slots.take(0.01)  # times out
    slots.give()
    assert slots.free() == 1
    assert slots.take(0.01)


def test_a_slot_given_back_wakes_a_waiter() -> None:
    slots = ConnectionSlots(1)
    assert slots.try_take()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(slots.take(5.0)))
    waiter.start()
    slots.give()
    waiter.join(5.0)
    assert results == [True]


def _samples(histogram: Any) -> dict[tuple[str, str], float]:
    return {(sample.name, sample.labels.get("le", "")): sample.value
            for metric in histogram.collect() for sample in metric.samples
            if not sample.name.endswith("_created")}


@pytest.mark.parametrize("values", [
    pytest.param([0.0, 0.0001, 0.0005, 0.00050001, 0.003, 10.0, 11.0, 1e9], id="bounds and beyond"),
    pytest.param([0.001] * 5, id="one bucket, repeatedly"),
])
def test_histogram_observer_records_what_observe_records(values: list[float]) -> None:
    registry = CollectorRegistry()
    public = Histogram("public_seconds", "", ["database"], buckets=DURATION_BUCKETS_SECONDS,
                       registry=registry)
    handled = Histogram("handled_seconds", "", ["database"], buckets=DURATION_BUCKETS_SECONDS,
                        registry=registry)
    observe = histogram_observer(handled.labels("default"))
    for value in values:
        public.labels("default").observe(value)
        observe(value)
    expected = {(name.replace("public", "handled"), le): value
                for (name, le), value in _samples(public).items()}
    assert _samples(handled) == expected


def test_histogram_observer_falls_back_to_observe_for_unknown_layouts() -> None:
    seen: list[float] = []

    class Child:
        def observe(self, value: float) -> None:
            seen.append(value)

    histogram_observer(Child())(0.5)
    assert seen == [0.5]


class _FakeConnection:
    """What the pre-ping reads of a psycopg2 connection: fileno() and closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = 0

    def fileno(self) -> int:
        return self.sock.fileno()


def test_a_quiet_socket_is_quiet_and_a_readable_or_closed_one_is_not(poll_kind: str) -> None:
    ours, server = socket.socketpair()
    connection, info = _FakeConnection(ours), {}
    try:
        assert _is_quiet(connection, info)
        assert _is_quiet(connection, info)  # the cached poll object
        server.send(b"E")  # an error message from a restarting server
        assert not _is_quiet(connection, info)
        ours.recv(1)
        assert _is_quiet(connection, info)
        server.close()  # end of file
        assert not _is_quiet(connection, info)
        connection.closed = 1
        assert not _is_quiet(connection, info)
    finally:
        ours.close()


def test_the_poll_follows_a_new_descriptor(poll_kind: str) -> None:
    first, first_peer = socket.socketpair()
    second, second_peer = socket.socketpair()
    connection, info = _FakeConnection(first), {}
    try:
        assert _is_quiet(connection, info)
        second_peer.close()  # the new socket is at end of file
        connection.sock = second
        assert not _is_quiet(connection, info)
    finally:
        for sock in (first, first_peer, second):
            sock.close()


def test_no_socket_means_not_quiet(poll_kind: str) -> None:
    class NoSocket:
        pass

    class Broken:
        closed = 0

        def fileno(self) -> int:
            return -1

    assert not _is_quiet(NoSocket(), {})
    assert not _is_quiet(Broken(), {})


def test_the_poll_keeps_the_gil() -> None:
    """The zero-timeout poll gives no other thread a turn. select.poll() releases the GIL
    around its system call, which let the resetter thread's work land in the middle of a
    checkout (how often depends on the threads' timing, so only the held poll is asserted)."""
    import sys

    if engines._held_poll is None:
        pytest.skip("no libc poll() on this platform: select.poll() is used")

    left, right = socket.socketpair()
    turns = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1

    class Connection:
        closed = 0

        def fileno(self) -> int:
            return left.fileno()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.2)  # between forced switches, only a released GIL gives a turn
    spinner = threading.Thread(target=spin)
    try:
        connection, info = Connection(), {}
        assert _is_quiet(connection, info)  # set up outside the measured polls
        spinner.start()
        while turns == 0:
            threading.Event().wait(0.001)  # the spinner runs while this thread sleeps
        before = turns
        for _ in range(2000):
            assert _is_quiet(connection, info)
        gave_turns = turns != before
    finally:
        stop.set()
        sys.setswitchinterval(switch)
        spinner.join()
        left.close()
        right.close()
    assert not gave_turns
