"""The follower's protocol without I/O: what it asks next and what it makes of each answer."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from scalekit.cache.generations import LocalGenerations, fleet_generation
from scalekit.cache.tiers.fleetlog import Follower, LogEntry, Poll, Replay, Resync, parse_entry

S = 3.0


def joined(remote: dict[str, int] | None = None, *, sequence: int = 4) -> Follower:
    follower = Follower(LocalGenerations(), max_staleness_seconds=S)
    assert isinstance(follower.next_step(), Resync)
    follower.resynced(sent_at=10.0, epoch="e1", sequence=sequence, remote=remote or {})
    return follower


def test_entries_apply_in_order_and_duplicates_are_ignored() -> None:
    follower = joined()
    entries = [LogEntry(5, 4, ("a",)), LogEntry(6, 5, ("b",))]
    assert follower.polled(sent_at=11.0, entries=entries, complete=True, head=6) == entries
    assert follower.polled(sent_at=12.0, entries=entries, complete=True, head=6) == []
    assert follower.position == 6 and follower.trusted_until == 12.0 + follower.trust_seconds
    assert follower.local.generation("b") == fleet_generation(6)


def test_a_gap_in_the_log_means_resync_not_trust() -> None:
    follower = joined()
    follower.polled(sent_at=11.0, entries=[LogEntry(7, 6, ("a",))], complete=True, head=7)
    assert follower.trusted_until == 10.0 + follower.trust_seconds  # from the join only
    assert isinstance(follower.next_step(), Resync)


def test_a_read_that_stops_short_of_the_head_means_resync() -> None:
    follower = joined()
    follower.polled(sent_at=11.0, entries=[], complete=True, head=9)  # the log lost 5..9
    assert follower.trusted_until == 10.0 + follower.trust_seconds and isinstance(follower.next_step(), Resync)


def test_an_incomplete_read_applies_but_does_not_extend_trust() -> None:
    follower = joined()
    follower.polled(sent_at=11.0, entries=[LogEntry(5, 4, ("a",))], complete=False, head=9)
    assert follower.position == 5 and follower.trusted_until == 10.0 + follower.trust_seconds
    assert follower.next_step() == Poll(epoch="e1", after=5)


def test_queued_tags_are_replayed_before_polling_and_kept_if_queued_again() -> None:
    follower = joined()
    follower.queue(["a", "b"])
    step = follower.next_step()
    assert isinstance(step, Replay) and step.tags == ("a", "b")
    counts = follower.outbox_counts(step.tags)
    follower.queue(["b"])  # invalidated again while the replay was on its way
    follower.published(step.tags, 5, counts=counts)
    assert follower.pending == 1 and follower.local.generation("a") == fleet_generation(5)


def test_a_lost_state_drops_what_is_held_and_replays_what_it_forgot() -> None:
    dropped: list[bool] = []
    follower = joined({"a": 3, "b": 4})
    follower.on_lost_track = lambda: dropped.append(True)
    follower.epoch_changed()
    step = follower.next_step()
    assert isinstance(step, Resync) and step.recovering
    follower.resynced(sent_at=20.0, epoch="e2", sequence=4, remote={"b": 1})
    assert dropped == [True]
    replay = follower.next_step()
    assert isinstance(replay, Replay) and replay.tags == ("a", "b")  # both known above Redis


def test_malformed_entries_are_refused() -> None:
    assert parse_entry(b"5-0", {b"p": b"4", b"g": b'["a"]', b"t": b"1.5", b"o": b"x"}) == \
        LogEntry(5, 4, ("a",), 1.5, "x")
    assert parse_entry(b"5-0", {b"p": b"4", b"g": b"not json"}) is None
    assert parse_entry(b"5-0", {b"p": b"4", b"g": b"[1, 2]"}) is None
    assert parse_entry(b"x-0", {b"p": b"4", b"g": b"[]"}) is None


def test_a_poll_renews_the_lease_once_renew_seconds_passed() -> None:
    follower = Follower(LocalGenerations(), max_staleness_seconds=S, renew_seconds=0.5)
    follower.next_step(10.0)
    follower.resynced(sent_at=10.0, epoch="e1", sequence=4, remote={})
    assert follower.next_step(10.4) == Poll(epoch="e1", after=4, renew=False)
    assert follower.next_step(10.5) == Poll(epoch="e1", after=4, renew=True)
    assert follower.next_step() == Poll(epoch="e1", after=4, renew=True)  # no clock: renew
    follower.polled(sent_at=10.6, entries=[], complete=True, head=4, renewed=True)
    assert follower.next_step(10.7) == Poll(epoch="e1", after=4, renew=False)


def test_a_poll_that_did_not_renew_never_trusts_past_the_lease() -> None:
    follower = Follower(LocalGenerations(), max_staleness_seconds=S, renew_seconds=0.5)
    follower.next_step(10.0)
    follower.resynced(sent_at=10.0, epoch="e1", sequence=4, remote={})
    follower.polled(sent_at=10.4, entries=[LogEntry(5, 4, ("a",))], complete=True, head=5,
                    renewed=False)
    assert follower.position == 5  # applied, and acknowledged by the next poll
    assert follower.trusted_until == 10.0 + follower.trust_seconds  # the lease renewed at 10.0 ends first
    follower.polled(sent_at=10.6, entries=[], complete=True, head=5, renewed=True)
    assert follower.trusted_until == 10.6 + follower.trust_seconds


@given(renewed_at=st.floats(min_value=0.0, max_value=1e6), round_trip=st.floats(min_value=0.0, max_value=0.001),
       lease=st.sampled_from([0.05, 0.5, 3.0, 30.0]), caught_up_later=st.floats(min_value=0.0, max_value=1.0))
def test_trust_never_outlives_the_lease_as_redis_dates_it(renewed_at: float, round_trip: float, lease: float,
                                                         caught_up_later: float) -> None:
    """fleetredis.py's scripts date a lease's end from Redis's clock in whole milliseconds,
    rounded down (``now_ms() + lease``), and prune a member once its end is reached; a writer
    then stops waiting for it, so by then the instance must no longer trust what it holds."""
    follower = Follower(LocalGenerations(), max_staleness_seconds=lease, renew_seconds=0.0)
    follower.next_step(renewed_at)
    follower.resynced(sent_at=renewed_at, epoch="e1", sequence=4, remote={})
    later = renewed_at + caught_up_later
    follower.polled(sent_at=later, entries=[], complete=True, head=4, renewed=True)
    # Redis ran the renewal a round trip after it was sent (the same clock, as on one host).
    lease_end = math.floor((later + round_trip) * 1000) / 1000 + lease
    assert follower.trusted_until <= lease_end
