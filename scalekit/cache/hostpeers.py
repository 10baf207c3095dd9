"""Doorbells between the processes of one host that share a generations file.

Why: without Redis, the workers of a host learn each other's invalidations from the shared
generations file. Polling it is cheap but slow (every ``poll_interval_seconds``); for
read-your-writes the writer rings every other process, each loads the file at once and answers
with the file's write counter it has applied, and the writer waits (briefly) for every answer.

Each process binds one datagram socket: an abstract Unix address on Linux (nothing on disk, gone
with the process), a socket file in the temp directory elsewhere. Its address is derived from
the generations file and the pid, so peers find each other from the pids registered in the file.
A ring is ``b"ring <written>"``; the answer ``b"ack <written> <pid>"`` goes back to the ringer's
address. A ring to a process that exited fails at once (no one bound there): that peer is gone.

>>> import tempfile, os
>>> peers = HostPeers(os.path.join(tempfile.mkdtemp(), "generations.sqlite3"))
>>> peers.address_of(os.getpid()) == peers.address
True
>>> peers.close()
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable

__all__ = ["HostPeers"]

_ABSTRACT = sys.platform.startswith("linux")


class HostPeers:
    """This process's doorbell: ring peers, answer rings, wait for answers."""

    def __init__(self, generations_path: str | os.PathLike[str]) -> None:
        self._stem = hashlib.blake2b(os.fsencode(os.path.abspath(generations_path)),
                                     digest_size=8).hexdigest()
        self._acked: dict[int, int] = {}
        self._answered = threading.Condition()
        self.pid = os.getpid()
        self.address = self.address_of(self.pid)
        self._socket = self._bind(self.address)

    def address_of(self, pid: int) -> str:
        """The doorbell address of process ``pid`` for this generations file."""
        if _ABSTRACT:
            return f"\0scalekit-{self._stem}-{pid}"
        return os.path.join(tempfile.gettempdir(), f"scalekit-{self._stem}-{pid}.sock")

    @staticmethod
    def _bind(address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if not _ABSTRACT:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address)
            sock.bind(address)  # taken when a second runtime of this process shares the file
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def fileno(self) -> int:
        return self._socket.fileno()

    # ----------------------------------------------------------------- ringer
    def ring(self, pids: Iterable[int], written: int) -> tuple[list[int], list[int]]:
        """Ring ``pids`` about write ``written``: (rung, gone) — gone ones had no doorbell."""
        rung: list[int] = []
        gone: list[int] = []
        message = b"ring %d" % written
        for pid in pids:
            if pid == self.pid:
                continue
            try:
                self._socket.sendto(message, self.address_of(pid))
            except (ConnectionRefusedError, FileNotFoundError):
                gone.append(pid)
            except OSError:  # a full queue: the peer is alive but busy; it reads the file anyway
                rung.append(pid)
            else:
                rung.append(pid)
        return rung, gone

    def wait(self, pids: Iterable[int], written: int, *, timeout_seconds: float,
             monotonic: Callable[[], float] = time.monotonic) -> list[int]:
        """Wait until every one of ``pids`` answered ``written`` or later; those that did not."""
        waiting = set(pids)
        deadline = monotonic() + timeout_seconds
        with self._answered:
            while True:
                waiting = {pid for pid in waiting if self._acked.get(pid, -1) < written}
                remaining = deadline - monotonic()
                if not waiting or remaining <= 0:
                    return sorted(waiting)
                self._answered.wait(remaining)

    # ----------------------------------------------------------------- listener side
    def receive(self, applied: Callable[[int], int]) -> None:
        """Handle every datagram waiting: answer rings (after ``applied(written)`` has loaded the
        file up to at least ``written``; it returns what it applied) and record answers."""
        while True:
            try:
                data, sender = self._socket.recvfrom(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            parts = data.split()
            if len(parts) == 2 and parts[0] == b"ring" and parts[1].isdigit():
                done = applied(int(parts[1]))
                with contextlib.suppress(OSError):
                    self._socket.sendto(b"ack %d %d" % (done, self.pid), sender)
            elif len(parts) == 3 and parts[0] == b"ack" and parts[1].isdigit() and parts[2].isdigit():
                with self._answered:
                    pid = int(parts[2])
                    self._acked[pid] = max(self._acked.get(pid, -1), int(parts[1]))
                    self._answered.notify_all()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()
        if not _ABSTRACT:
            with contextlib.suppress(OSError):
                os.unlink(self.address)
