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
        since = generations.sequence()
        stamp = generations.stamp(["x"], since)
        assert stamp is not None
        await generations.ainvalidate(["x"])
        assert not generations.is_current(stamp)

    asyncio.run(scenario())


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings
from hypothesis import strategies as st

TAG_NAMES = ("a", "b", "c", "d")
operations = st.lists(st.one_of(
    st.tuples(st.just("stamp"), st.sets(st.sampled_from(TAG_NAMES))),
    st.tuples(st.just("invalidate"), st.sets(st.sampled_from(TAG_NAMES), min_size=1)),
    st.tuples(st.just("begin"), st.just(frozenset())),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps=operations)
def test_current_exactly_while_no_tag_was_invalidated_since_the_stamp(
        steps: list[tuple[str, set[str]]]) -> None:
    """Nothing stamped before an invalidation of its tag counts as current: the generations
    alone, against a model that counts invalidations."""
    generations = LocalGenerations()
    counts = dict.fromkeys(TAG_NAMES, 0)
    since, counts_at_begin = generations.sequence(), dict(counts)
    stamps: list[tuple[object, dict[str, int]]] = []
    for kind, tags in steps:
        if kind == "begin":  # an origin call starts: generations are read now
            since, counts_at_begin = generations.sequence(), dict(counts)
        elif kind == "invalidate":
            generations.invalidate(tags)
            for tag in tags:
                counts[tag] += 1
        else:
            stamp = generations.stamp(sorted(tags), since)
            overlapped = any(counts[tag] != counts_at_begin[tag] for tag in tags)
            assert (stamp is None) == overlapped  # never stored as fresh if it overlapped
            if stamp is not None:
                stamps.append((stamp, {tag: counts[tag] for tag in tags}))
        for stamp, seen in stamps:
            assert generations.is_current(stamp) == all(counts[t] == n for t, n in seen.items())
