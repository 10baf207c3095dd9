"""An HTTP/1.1 origin on raw sockets whose failures a test chooses: what an ASGI server would
never do (send more bytes than Content-Length, reset a connection, stall, stop listening).

``mode`` applies to the next requests: ``"ok"`` answers (keep-alive), ``"overflow"`` answers
with 6 bytes more than its Content-Length and keeps the connection (poisoning it for the
client's next request), ``"reset"`` closes the connection with a TCP reset as soon as the
request has arrived, ``"stall"`` reads the request and never answers. :meth:`refuse` closes the
listening socket (connections are refused) and :meth:`listen` opens it again on the same port.

Requests are read up to their header section (bodies are not expected). The query string
scripts a normal answer: ``cc`` (Cache-Control), ``etag`` (an ETag; a matching
If-None-Match gets 304). The body names the path and how often the origin answered it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import parse_qs, urlsplit

__all__ = ["RawOrigin"]

STALL_SECONDS = 30.0


class RawOrigin:
    def __init__(self) -> None:
        self.mode = "ok"
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.port = 0
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._open: list[socket.socket] = []
        self.listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """Stop listening (and drop kept-alive connections): new connections are refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._close_open()

    def close(self) -> None:
        self._stop.set()
        self.refuse()

    def _close_open(self) -> None:
        with self.lock:
            connections, self._open = self._open, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with self.lock:
                self._open.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                if not self._answer(connection, head.decode("latin-1")):
                    return

    def _answer(self, connection: socket.socket, head: str) -> bool:
        lines = head.split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3:  # a request with a body: this origin serves bodiless ones only
            return False
        method, target = request_line[:2]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        mode = self.mode
        if mode == "reset":
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()
            return False
        if mode == "stall":
            self._stop.wait(STALL_SECONDS)
            return False
        url = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self.lock:
            count = self.calls[url.path] = self.calls.get(url.path, 0) + 1
        out = ["content-type: text/plain"]
        if "cc" in params:
            out.append(f"cache-control: {params['cc']}")
        if "etag" in params:
            out.append(f'etag: "{params["etag"]}"')
            if headers.get("if-none-match") == f'"{params["etag"]}"':
                connection.sendall(("HTTP/1.1 304 Not Modified\r\n" + "\r\n".join(out) + "\r\n\r\n").encode())
                return True
        body = f"{method} {url.path} call={count}".encode()
        extra = b"EXTRA!" if mode == "overflow" else b""
        out.append(f"content-length: {len(body)}")
        connection.sendall(("HTTP/1.1 200 OK\r\n" + "\r\n".join(out) + "\r\n\r\n").encode()
                           + (b"" if method == "HEAD" else body) + extra)
        return True
