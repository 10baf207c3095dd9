"""Redis servers the cache tests start and stop themselves, and a TCP proxy they can cut.

Every server runs like a managed Redis: CONFIG and CLIENT are renamed away, so any call to them
fails the test. No persistence: a restart loses the data, like a cache-only Redis would.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_for_port

__all__ = ["RedisCluster", "RedisServer", "TcpProxy", "answer_lifespan", "free_port", "pause_process",
           "wait_until", "wrapped_on_demand"]

MANAGED_ARGS = ("--rename-command", "CONFIG", "", "--rename-command", "CLIENT", "")
START_TIMEOUT_SECONDS = 20.0


WAIT_SECONDS = 20.0


async def answer_lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol of an origin with nothing to start or stop (the fleet and
    fault apps; kept here, in a module that wraps nothing at import)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def wrapped_on_demand(namespace: dict[str, Any], origins: dict[str, Any],
                      **options: Any) -> Callable[[str], Any]:
    """A module ``__getattr__`` that wraps ``origins[name]`` the first time a server imports
    ``name``: one runtime per process (another, never serving, would still take part in every
    ``scalekit.invalidate()``: acknowledge, and be invalidated and waited for, each time)."""
    import scalekit

    def __getattr__(name: str) -> Any:
        if name not in origins:
            raise AttributeError(name)
        wrapped = scalekit.wrap(origins[name], **options)
        namespace[name] = wrapped
        return wrapped

    return __getattr__


def wait_until(condition: Callable[[], bool], what: str, *, pause_seconds: float = 0.002) -> float:
    """Poll ``condition`` until true (generously: two shared cores); the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > WAIT_SECONDS:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(pause_seconds)
    return time.monotonic() - start


def pause_process(pid: int) -> None:
    """SIGSTOP ``pid`` and return once it is stopped: delivery can lag by milliseconds on a
    loaded machine, during which the process still answers."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] not in ("T", "t"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} did not stop")
        time.sleep(0.001)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisServer:
    """One redis-server on 127.0.0.1:``port`` (restartable on the same port)."""

    def __init__(self, *, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.extra_args = extra_args
        self.directory = Path(tempfile.mkdtemp(prefix="scalekit-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), *MANAGED_ARGS, *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process, timeout_seconds=START_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered (a silent Redis)."""
        assert self.process is not None
        pause_process(self.process.pid)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisCluster:
    """Three masters, no replicas, created with ``redis-cli --cluster create``."""

    def __init__(self) -> None:
        self.nodes = [RedisServer(port=_cluster_port(), extra_args=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000")) for _ in range(3)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{node.port}" for node in self.nodes],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.wait_ok()
        return self

    def wait_ok(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            states = [node.cli("cluster", "info") for node in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise TimeoutError("the 3-node Redis cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restart(self) -> None:
        """Restart every node; nodes.conf keeps the slot layout, the data is gone."""
        self.stop()
        for node in self.nodes:
            node.start()
        self.wait_ok()

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class TcpProxy:
    """A loopback TCP proxy to ``target_port`` whose faults the test switches on and off.

    - ``cut()``: drop every connection and refuse new ones until ``restore()`` (Redis "stopped"
      in a few microseconds, without a restart);
    - ``stall()``: forward nothing either way (connections stay open, bytes wait in the kernel)
      until ``restore()``, which delivers them: a Redis paused for a while;
    - ``blackhole()``: like a stall, but ``restore()`` then drops the held connections without
      delivering anything (packets lost, the peers never told);
    - ``reset()``: close every connection with a TCP RST, then carry on accepting;
    - ``delay(seconds)``: deliver every chunk ``seconds`` late (0 to stop).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._cut = False
        self._held = threading.Event()  # set while stalled or blackholed: nothing is pumped
        self._blackholed = False
        self._delay_seconds = 0.0
        self._late: list[tuple[float, int, socket.socket, bytes]] = []  # (due, order, to, data)
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="tcp-proxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in list(self._pairs):
                self._drop(sock)

    def stall(self) -> None:
        with self._lock:
            self._held.set()

    def blackhole(self) -> None:
        with self._lock:
            self._blackholed = True
            self._held.set()

    def reset(self) -> None:
        with self._lock:
            for sock in list(self._pairs):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._drop(sock)

    def delay(self, seconds: float) -> None:
        with self._lock:
            self._delay_seconds = seconds

    def restore(self) -> None:
        """Back to a plain proxy: no cut, stall, blackhole or delay."""
        with self._lock:
            self._cut = False
            self._delay_seconds = 0.0
            if self._blackholed:
                for sock in list(self._pairs):
                    self._drop(sock)
                self._blackholed = False
            self._held.clear()

    def close(self) -> None:
        self._stop = True
        self._held.clear()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in list(self._pairs):
                self._drop(sock)
        self._selector.close()
        self._listener.close()

    def _drop(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for one in (sock, peer):
            if one is None:
                continue
            self._pairs.pop(one, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(one)
            with contextlib.suppress(OSError):
                one.close()

    def _run(self) -> None:
        while not self._stop:
            if self._held.is_set():
                time.sleep(0.005)  # bytes wait in the kernel's buffers; handshakes still complete
                continue
            timeout = 0.05
            if self._late:
                timeout = max(0.0, min(timeout, self._late[0][0] - time.monotonic()))
            events = self._selector.select(timeout=timeout)
            with self._lock:
                if self._held.is_set():
                    continue
                for key, _ in events:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._pump(key.fileobj)  # type: ignore[arg-type]
                self._send_due()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._cut:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._selector.register(sock, selectors.EVENT_READ, None)
        self._pairs[client] = upstream
        self._pairs[upstream] = client

    def _pump(self, sock: socket.socket) -> None:
        peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        if self._delay_seconds > 0:
            heapq.heappush(self._late, (time.monotonic() + self._delay_seconds,
                                        next(self._order), peer, data))
            return
        self._send(peer, data)

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._late and (self._late[0][0] <= now or self._delay_seconds <= 0):
            _, _, peer, data = heapq.heappop(self._late)
            if peer in self._pairs:
                self._send(peer, data)

    def _send(self, peer: socket.socket, data: bytes) -> None:
        try:
            peer.setblocking(True)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._drop(peer)


@contextlib.contextmanager
def running_redis(**kwargs: object) -> Iterator[RedisServer]:
    server = RedisServer(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()
