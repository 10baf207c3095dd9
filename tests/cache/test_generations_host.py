"""HostGenerations: persisted generations shared by the processes of one host."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from scalekit.cache.hostgenerations import HostGenerations


def _invalidate_in_another_process(path: str, tags: list[str]) -> None:
    generations = HostGenerations(path)
    generations.invalidate(tags)
    generations.close()


def test_another_process_invalidation_reaches_this_one(tmp_path: Path) -> None:
    path = tmp_path / "generations.sqlite3"
    here = HostGenerations(path, poll_interval_seconds=0.01)
    stamp = here.stamp(["product:1", "other"], here.sequence())  # sequence() starts the watcher
    assert stamp is not None
    worker = multiprocessing.get_context("spawn").Process(
        target=_invalidate_in_another_process, args=(str(path), ["product:1"]))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    deadline = time.monotonic() + 20
    while here.is_current(stamp):
        assert time.monotonic() < deadline, "the watcher never saw the other process's write"
        time.sleep(0.005)
    assert here.is_current((("other", 0),))
    here.close()


def test_sequence_numbers_never_repeat_across_processes_of_the_host(tmp_path: Path) -> None:
    path = tmp_path / "generations.sqlite3"
    first, second = HostGenerations(path), HostGenerations(path)
    first.invalidate(["a"])
    second.invalidate(["b"])  # second has not loaded first's write: the file decides
    first.invalidate(["c"])
    third = HostGenerations(path)
    values = [third.generation(tag) for tag in ("a", "b", "c")]
    assert len(set(values)) == 3 and third.sequence() == max(values)
    for generations in (first, second, third):
        generations.close()


def test_unwritable_file_keeps_invalidation_in_process(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    generations = HostGenerations(blocker / "generations.sqlite3")
    stamp = generations.stamp(["t"], 0)
    generations.invalidate(["t"])  # logged, applied here; never raises
    assert stamp is not None and not generations.is_current(stamp)
    generations.close()
