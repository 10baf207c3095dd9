"""scalekit.forks: the process id the request path compares, kept without a system call."""

from __future__ import annotations

import multiprocessing
import os

from scalekit import forks


def _report(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put((forks.pid(), os.getpid()))


def test_pid_is_this_process():
    assert forks.pid() == os.getpid()


def test_a_forked_child_and_its_own_child_know_their_ids():
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: fork once more, then report both generations' ids
        try:
            grandchild = os.fork()
            if grandchild == 0:
                os.write(write, f"{forks.pid()} {os.getpid()}\n".encode())
                os._exit(0)
            os.waitpid(grandchild, 0)
            os.write(write, f"{forks.pid()} {os.getpid()}\n".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as lines:
        reports = [tuple(map(int, line.split())) for line in lines]
    assert len(reports) == 2
    assert all(known == actual for known, actual in reports)
    assert len({actual for _known, actual in reports} | {os.getpid()}) == 3
    assert forks.pid() == os.getpid()


def test_a_multiprocessing_fork_child_knows_its_id():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_report, args=(queue,))
    process.start()
    known, actual = queue.get(timeout=10)
    process.join(10)
    assert known == actual == process.pid
