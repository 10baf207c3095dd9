"""The savings counters: every recorded hit reaches them by the next scrape, exactly, from any
number of threads and under bounded route labels (multiprocess mode, where a background flusher
writes them: tests/test_metrics_flusher.py)."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY

from scalekit.metrics import instruments
from scalekit.metrics.instruments import Savings


def saved(route: str) -> tuple[float, float, float]:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"route": route}) or 0.0
    return (sample("scalekit_cache_route_hits_total"), sample("scalekit_cache_origin_seconds_saved_total"),
            sample("scalekit_cache_db_seconds_saved_total"))


def test_recorded_hits_are_in_the_next_scrape() -> None:
    savings = Savings()
    before = saved("/savings/a")
    for _ in range(3):
        savings.record("/savings/a", 0.25, 0.125)
    hits, origin, db = saved("/savings/a")
    assert (hits - before[0], origin - before[1], db - before[2]) == (3, 0.75, 0.375)


def test_pending_hits_are_bounded_without_any_scrape() -> None:
    savings = Savings()
    before = saved("/savings/bounded")[0]
    for _ in range(savings.flush_every * 3 + 5):
        savings.record("/savings/bounded", 0.0, 0.0)
        assert len(savings.pending) < savings.flush_at
    assert saved("/savings/bounded")[0] - before == savings.flush_every * 3 + 5


def test_threads_recording_and_scrapes_lose_nothing() -> None:
    savings = Savings()
    before = saved("/savings/threads")
    threads = [threading.Thread(target=lambda: [savings.record("/savings/threads", 0.5, 0.25)
                                                for _ in range(5_000)]) for _ in range(6)]
    scraper = threading.Thread(target=lambda: [saved("/savings/threads") for _ in range(200)])
    for thread in [*threads, scraper]:
        thread.start()
    for thread in [*threads, scraper]:
        thread.join()
    hits, origin, db = saved("/savings/threads")
    assert (hits - before[0], origin - before[1], db - before[2]) == (30_000, 15_000.0, 7_500.0)


def test_route_labels_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instruments, "MAX_SAVINGS_ROUTES", 2)
    savings = Savings()
    before = saved("overflow")[0]
    for index in range(5):
        savings.record(f"/savings/raw-{index}", 1.0, 0.0)
    savings.flush()
    assert saved("/savings/raw-0")[0] == 1 and saved("/savings/raw-1")[0] == 1
    assert saved("/savings/raw-2")[0] == 0 and saved("overflow")[0] - before == 3
