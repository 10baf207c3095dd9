"""The connection slots: a counting semaphore whose take and give are single C calls."""

from __future__ import annotations

import threading

from scalekit.pool.slots import ConnectionSlots


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
