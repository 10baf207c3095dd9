"""LocalGenerations: the Generations protocol in one process."""

from __future__ import annotations

import asyncio

from scalekit.cache.generations import LocalGenerations


def test_stamp_then_invalidate_makes_entry_not_current() -> None:
    generations = LocalGenerations()
    since = generations.sequence()
    stamp = generations.stamp(["a", "b"], since)
    assert stamp == (("a", 0), ("b", 0))
    assert generations.is_current(stamp)
    generations.invalidate(["b"])
    assert not generations.is_current(stamp)
    assert generations.is_current((("a", 0),))


def test_overlapping_invalidation_refuses_a_stamp() -> None:
    generations = LocalGenerations()
    since = generations.sequence()  # origin call starts
    generations.invalidate(["product:1"])  # invalidation during the origin call
    assert generations.stamp(["product:1"], since) is None
    assert generations.stamp(["other"], since) == (("other", 0),)
    later = generations.sequence()
    assert generations.stamp(["product:1"], later) == (("product:1", 1),)


def test_apply_only_moves_forward() -> None:
    generations = LocalGenerations()
    assert generations.apply(5, ["t"])
    assert not generations.apply(3, ["t"])
    assert generations.generation("t") == 5 and generations.sequence() == 5


def test_async_twins() -> None:
    async def scenario() -> None:
        generations = LocalGenerations()
        since = await generations.asequence()
        stamp = await generations.astamp(["x"], since)
        assert stamp is not None
        await generations.ainvalidate(["x"])
        assert not generations.is_current(stamp)

    asyncio.run(scenario())
