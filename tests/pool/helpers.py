"""Drivers and fixtures' building blocks for the pool tests: direct WSGI/ASGI calls, a TCP proxy
that can drop every connection, unique table names, Postgres probes."""

from __future__ import annotations

import asyncio
import io
import os
import selectors
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
from prometheus_client import REGISTRY

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def pg_url(application_name: str, *, host: str = "127.0.0.1", port: int = 5432) -> str:
    return f"postgresql://postgres@{host}:{port}/test?application_name={application_name}"


def unique(prefix: str = "sk_pool") -> str:
    """A table or application name no other test (or engineer) uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def pg_execute(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` on a fresh autocommit psycopg2 connection (outside any app)."""
    connection = psycopg2.connect(PG_DSN, application_name="sk_pool_tests_admin")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def pg_sessions(application_name: str) -> dict[str, int]:
    """Backends of ``application_name`` by state ('idle', 'idle in transaction', 'active')."""
    rows = pg_execute("SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                      "WHERE application_name = %s GROUP BY 1", (application_name,))
    return {state: count for state, count in rows}


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def assert_connection_gauges(update: Callable[[], None], **expected: float) -> None:
    """``scalekit_pool_connections`` of database "default", by state (``used=2, idle=1``),
    right after ``update`` (a service's or a database's ``update_gauges``).

    The gauges are the process's, by database name, and a pool left running by an earlier test
    in this process sets them too (its worker ticks every second), maybe between the update and
    the read: so a few tries, each updating again. A wrong reading fails every try.
    """
    seen: dict[str, float] = {}
    for _attempt in range(5):
        update()
        seen = {state: sample("scalekit_pool_connections", {"database": "default", "state": state})
                for state in expected}
        if seen == expected:
            return
    assert seen == expected


# --------------------------------------------------------------------------- WSGI


def environ_for(path: str, method: str = "GET") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""), "wsgi.errors": None, "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


class WSGICall:
    """One WSGI request driven by hand, as a server would (or would fail to).

    Like a real server, the start_response it passes does not lead back to this object, so a
    body dropped without close() is freed by reference counting alone.
    """

    def __init__(self, app: Callable[..., Any], path: str, method: str = "GET") -> None:
        self.environ = environ_for(path, method)
        self.chunks: list[bytes] = []
        self._started: dict[str, Any] = {"status": None, "headers": []}
        started, chunks = self._started, self.chunks

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started["status"], started["headers"] = status, headers
            return chunks.append

        self.body = app(self.environ, start_response)
        self.iterator = iter(self.body)

    @property
    def status(self) -> str | None:
        return self._started["status"]  # type: ignore[no-any-return]

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self._started["headers"]  # type: ignore[no-any-return]

    def read(self, count: int | None = None) -> WSGICall:
        """Read ``count`` chunks (all when None)."""
        for index, chunk in enumerate(self.iterator):
            self.chunks.append(chunk)
            if count is not None and index + 1 >= count:
                break
        return self

    def close(self) -> WSGICall:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
        return self

    @property
    def code(self) -> int:
        assert self.status is not None
        return int(self.status[:3])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


def wsgi_get(app: Callable[..., Any], path: str) -> WSGICall:
    """A complete, well-behaved request: read everything, then close."""
    return WSGICall(app, path).read().close()


# --------------------------------------------------------------------------- ASGI


class ASGICall:
    """One ASGI request; ``disconnect_after`` body chunks the client is gone (send raises)."""

    def __init__(self, path: str, *, disconnect_after: int | None = None) -> None:
        self.scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                      "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
                      "raw_path": path.encode(), "query_string": b"", "root_path": "",
                      "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1234),
                      "server": ("testserver", 80)}
        self.disconnect_after = disconnect_after
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self._requested = False
        self.disconnected = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected.is_set():
            raise OSError("client disconnected")  # ASGI spec 2.4
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], message["headers"]
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))
            if self.disconnect_after is not None and len(self.chunks) >= self.disconnect_after:
                self.disconnected.set()

    async def run(self, app: Callable[..., Any]) -> ASGICall:
        await app(self.scope, self.receive, self.send)
        return self

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


# --------------------------------------------------------------------------- TCP proxy


class TCPProxy:
    """A TCP proxy in front of Postgres that the test controls: drop every connection at once,
    or refuse new ones (as a database that is down would)."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self.refusing = False
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing or self._stopped:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select(timeout=1.0):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            self._close_pair(client, server)

    def _close_pair(self, client: socket.socket, server: socket.socket) -> None:
        for sock in (client, server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._lock:
            if (client, server) in self._pairs:
                self._pairs.remove((client, server))

    def drop_all(self) -> int:
        """Cut every proxied connection, as a database restart does; returns how many."""
        with self._lock:
            pairs = list(self._pairs)
        for client, server in pairs:
            self._close_pair(client, server)
        return len(pairs)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.drop_all()


def in_forked_child(work: Callable[[], bytes]) -> bytes:
    """What ``work()`` returns when run in a forked child (a fork-safety test's other side).

    The child exits at once afterwards, whatever happened; a child that raised answers with
    its exception's repr, so the test's assertion shows it.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        try:
            os.close(read_end)
            try:
                answer = work()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, not lost
                answer = f"child raised {exc!r}".encode()
            os.write(write_end, answer)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    assert os.waitpid(child, 0)[1] == 0
    return b"".join(chunks)
