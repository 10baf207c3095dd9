"""HostGenerations: persisted generations shared by the processes of one host."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

from scalekit.cache.hostgenerations import HostGenerations
from tests.cache.tiers.servers import pause_process


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


FOLLOWER = """
import sys
from scalekit.cache.hostgenerations import HostGenerations
generations = HostGenerations(sys.argv[1], poll_interval_seconds=10.0)  # only the doorbell is fast
stamp = generations.stamp(["price:1"], generations.sequence())  # sequence() starts the watcher
print("ready", flush=True)
for line in sys.stdin:
    print(generations.is_current(stamp), flush=True)
generations.close()
"""


def _follower(path: Path) -> subprocess.Popen[str]:
    log = path.parent / f"follower-{time.monotonic_ns()}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(path)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                   text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready", log.read_text()
    return process


def _until_not_current(process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 5.0  # its own polling would take 10 s
    while _ask(process) != "False":
        assert time.monotonic() < deadline, "the follower never applied the invalidation"
        time.sleep(0.01)


def _ask(process: subprocess.Popen[str]) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("current?\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_an_invalidation_returns_once_every_process_of_the_host_applied_it(tmp_path: Path) -> None:
    """Read-your-writes between the workers of one host without Redis."""
    path = tmp_path / "generations.sqlite3"
    followers = [_follower(path) for _ in range(2)]
    writer = HostGenerations(path)
    try:
        assert [_ask(process) for process in followers] == ["True", "True"]
        result = writer.invalidate(["price:1"])
        assert result.reach == "host" and result.acknowledged, result
        # Asked right after: both had applied it (their own polling would take 10 s).
        assert [_ask(process) for process in followers] == ["False", "False"]
    finally:
        writer.close()
        for process in followers:
            process.communicate(timeout=30)


def test_a_process_that_does_not_answer_is_named(tmp_path: Path) -> None:
    path = tmp_path / "generations.sqlite3"
    stopped = _follower(path)
    writer = HostGenerations(path, ack_timeout_seconds=0.05)
    try:
        pause_process(stopped.pid)
        result = writer.invalidate(["price:1"])
        assert result.reach == "host" and not result.acknowledged
        assert result.unacknowledged == (f"pid {stopped.pid}",)
        stopped.send_signal(signal.SIGCONT)
        _until_not_current(stopped)  # it answers the ring once it runs again
    finally:
        stopped.send_signal(signal.SIGCONT)
        writer.close()
        stopped.communicate(timeout=30)


def test_a_follower_that_exited_is_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "generations.sqlite3"
    gone = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert gone.stdout is not None and gone.stdout.readline().strip() == "ready"
    gone.kill()  # no clean close: its doorbell row stays in the file
    gone.wait(timeout=30)
    gone.stdout.close()
    assert gone.stdin is not None
    gone.stdin.close()
    writer = HostGenerations(path)
    try:
        assert writer.invalidate(["price:1"]).acknowledged  # nobody bound there: not waited for
        assert writer.invalidate(["price:2"]).acknowledged
    finally:
        writer.close()


FORK_WHILE_WRITING = """
import os, sqlite3, sys, threading, time
from scalekit.cache.hostgenerations import HostGenerations

path = sys.argv[1]
generations = HostGenerations(path)
generations.start()
blocker = sqlite3.connect(path, isolation_level=None)
blocker.execute("BEGIN IMMEDIATE")  # another process's write: the invalidation waits for it
writer = threading.Thread(target=generations.invalidate, args=(["price:1"],))
writer.start()
time.sleep(0.3)  # the writer now waits for SQLite's lock, holding the file's in-process lock
child = os.fork()
if child == 0:  # the fork hooks (restarting the watcher here) must not wait for the parent's writer
    os.write(1, b"child done\\n")
    os._exit(0)
deadline = time.monotonic() + 10
while os.waitpid(child, os.WNOHANG) == (0, 0):
    if time.monotonic() > deadline:
        os.kill(child, 9)
        os.waitpid(child, 0)
        print("child hung")
        break
    time.sleep(0.01)
blocker.execute("ROLLBACK")
writer.join()
"""


def test_a_process_forked_while_another_thread_writes_the_file_does_not_hang(tmp_path: Path) -> None:
    # A lock another thread of the parent held at the fork is held forever in the child, where
    # that thread does not exist: the child's fork hook must not wait for it.
    done = subprocess.run([sys.executable, "-c", FORK_WHILE_WRITING, str(tmp_path / "generations.sqlite")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "child done" in done.stdout and "child hung" not in done.stdout, done.stdout
