"""Group commit of a writer's invalidations, without Redis: who sends, what each caller hears."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from scalekit.cache.tiers.fleetbatch import BatchFailed, LoopBatches, ThreadBatches


def test_threads_arriving_during_a_call_ride_in_one_next_call() -> None:
    batches = ThreadBatches()
    in_flight, release = threading.Event(), threading.Event()
    sent: list[list[str]] = []

    def send(tags: list[str]) -> int:
        sent.append(tags)
        if len(sent) == 1:
            in_flight.set()
            release.wait()
        return len(sent)

    answers: dict[str, int] = {}

    def call(tag: str) -> None:
        answers[tag] = batches.submit([tag], send)

    first = threading.Thread(target=call, args=("a",))
    first.start()
    in_flight.wait()
    others = [threading.Thread(target=call, args=(tag,)) for tag in ("b", "c", "d")]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 20.0
    while batches._next is None or len(batches._next.tags) < 3:  # all three joined the next
        assert time.monotonic() < deadline, "the callers never joined"
        time.sleep(0.001)
    release.set()
    for thread in [first, *others]:
        thread.join()
    assert sent == [["a"], ["b", "c", "d"]]
    assert answers == {"a": 1, "b": 2, "c": 2, "d": 2} and batches.calls == 2


def test_a_failed_batch_fails_every_caller_it_carried() -> None:
    async def scenario() -> list[BaseException | int]:
        batches = LoopBatches()
        gate = asyncio.Event()

        async def send(tags: list[str]) -> int:
            if tags == ["a"]:
                await gate.wait()
                return 1
            raise ConnectionError("Redis went away")

        first = asyncio.create_task(batches.submit(["a"], send))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(batches.submit([tag], send)) for tag in ("b", "c")]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    first, *rest = asyncio.run(scenario())
    assert first == 1
    assert all(isinstance(error, BatchFailed) and isinstance(error.__cause__, ConnectionError)
               for error in rest), rest


def test_a_cancelled_caller_strands_nobody() -> None:
    async def scenario() -> list[int]:
        batches = LoopBatches()
        gate = asyncio.Event()

        async def send(tags: list[str]) -> int:
            await gate.wait()
            return len(tags)

        first = asyncio.create_task(batches.submit(["a"], send))
        await asyncio.sleep(0)
        joiner = asyncio.create_task(batches.submit(["b"], send))  # sets the next batch up
        other = asyncio.create_task(batches.submit(["c"], send))
        await asyncio.sleep(0)
        joiner.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await joiner
        answers = [await first, await other]
        answers.append(await batches.submit(["d"], send))  # nothing left busy
        return answers

    assert asyncio.run(scenario()) == [1, 2, 1]
