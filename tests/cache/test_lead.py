"""A coalescing leader's hold on its key ends once: the first finish wakes the waiters and
decides whether they share its answer; later finishes only hand back a lease still held."""

from __future__ import annotations

import threading

from scalekit.cache.coalesce import Lead, ThreadFlights


def test_the_first_finish_wakes_the_waiters_and_later_ones_change_nothing() -> None:
    flights = ThreadFlights()
    flight, none = flights.join("k")
    assert none is None  # the leader
    _, event = flights.join("k")
    assert isinstance(event, threading.Event)
    lead = Lead(flights, "k", flight)
    lead.lease = "lease"
    assert lead.finish() == "lease"
    assert event.is_set() and len(flights) == 0 and not flight.alone
    newer, leads = flights.join("k")  # a new flight for the key, after the first ended
    assert leads is None
    assert lead.finish(alone=True) is None
    assert not flight.alone  # the waiters were told at the first finish: they share the answer
    assert len(flights) == 1  # the newer flight is not ended by the old lead
    flights.finish("k", newer)


def test_a_lease_set_after_the_first_finish_is_still_handed_back() -> None:
    flights = ThreadFlights()
    flight, _ = flights.join("k")
    lead = Lead(flights, "k", flight)
    assert lead.finish(alone=True) is None and flight.alone
    lead.lease = "late"
    assert lead.finish() == "late"
    assert lead.finish() is None
