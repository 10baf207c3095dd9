"""Doorbells between the processes of one host that share a generations file.

Why: without Redis, the workers of a host learn each other's invalidations from the shared
generations file. Polling it is cheap but slow (every ``poll_interval_seconds``); for
read-your-writes the writer rings every other follower of the file, each loads the file at once
and answers with the file's write counter it has applied, and the writer waits (briefly) for
every answer.

Each follower (a ``HostGenerations``: one per runtime, so one per process as a rule) binds one
datagram socket of its own: an abstract Unix address on Linux (nothing on disk, gone with the
process), a socket file in the temp directory elsewhere. Followers register their address in the
file. A ring is ``b"ring <written>"``; the answer ``b"ack <written>"`` goes back to the ringer,
which knows who answered by the sender's address. A ring to an address nobody holds any more
fails at once: that follower is gone.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "generations.sqlite3")
>>> one, two = HostPeers(path), HostPeers(path)
>>> one.address != two.address and one.address.startswith(two.address[:20])
True
>>> one.close(); two.close()
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
import uuid
from collections.abc import Callable, Iterable

__all__ = ["HostPeers"]

_ABSTRACT = sys.platform.startswith("linux")


class HostPeers:
    """One follower's doorbell: ring the others, answer rings, wait for answers."""

    def __init__(self, generations_path: str | os.PathLike[str]) -> None:
        stem = hashlib.blake2b(os.fsencode(os.path.abspath(generations_path)),
                               digest_size=8).hexdigest()
        name = f"scalekit-{stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.address = (f"\0{name}" if _ABSTRACT
                        else os.path.join(tempfile.gettempdir(), f"{name}.sock"))
        self._acked: dict[str, int] = {}
        self._answered = threading.Condition()
        self._socket = self._bind(self.address)

    @staticmethod
    def _bind(address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def fileno(self) -> int:
        return self._socket.fileno()

    # ----------------------------------------------------------------- ringer
    def ring(self, addresses: Iterable[str], written: int) -> tuple[list[str], list[str]]:
        """Ring ``addresses`` about write ``written``: (rung, gone) — nobody holds the gone ones."""
        rung: list[str] = []
        gone: list[str] = []
        message = b"ring %d" % written
        for address in addresses:
            if address == self.address:
                continue
            try:
                self._socket.sendto(message, address)
            except (ConnectionRefusedError, FileNotFoundError):
                gone.append(address)
            except OSError:  # a full queue: the follower is alive but busy; it polls the file
                rung.append(address)
            else:
                rung.append(address)
        return rung, gone

    def wait(self, addresses: Iterable[str], written: int, *, timeout_seconds: float,
             monotonic: Callable[[], float] = time.monotonic) -> list[str]:
        """Wait until each of ``addresses`` answered ``written`` or later; those that did not."""
        waiting = set(addresses)
        deadline = monotonic() + timeout_seconds
        with self._answered:
            while True:
                waiting = {address for address in waiting
                           if self._acked.get(address, -1) < written}
                remaining = deadline - monotonic()
                if not waiting or remaining <= 0:
                    return sorted(waiting)
                self._answered.wait(remaining)

    # ----------------------------------------------------------------- follower side
    def receive(self, applied: Callable[[int], int]) -> None:
        """Handle every datagram waiting: answer rings (after ``applied(written)`` has loaded the
        file up to at least ``written``; it returns what it applied) and record answers."""
        while True:
            try:
                data, sender = self._socket.recvfrom(256)
            except OSError:  # BlockingIOError: nothing more waiting
                return
            parts = data.split()
            if len(parts) != 2 or not parts[1].isdigit():
                continue
            if parts[0] == b"ring":
                done = applied(int(parts[1]))
                with contextlib.suppress(OSError):
                    self._socket.sendto(b"ack %d" % done, sender)
            elif parts[0] == b"ack":
                key = sender.decode("utf-8", "replace") if isinstance(sender, bytes) else str(sender)
                with self._answered:
                    self._acked[key] = max(self._acked.get(key, -1), int(parts[1]))
                    self._answered.notify_all()

    def wake(self) -> None:
        """Wake whoever waits on this doorbell (a watcher told to stop)."""
        with contextlib.suppress(OSError):
            self._socket.sendto(b"wake", self.address)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()
        if not _ABSTRACT:
            with contextlib.suppress(OSError):
                os.unlink(self.address)
