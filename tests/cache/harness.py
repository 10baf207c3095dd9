"""One client interface over four ways of running the cached origin: WSGI and ASGI called in
process, gunicorn and uvicorn over HTTP. The behavioural suite is written once against it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tests.cache.origin_app import FakeClock, Origin, build_asgi, build_wsgi

WAIT_SECONDS = 20.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]   # lower-case names, repeated lines joined with ", "
    body: bytes

    @property
    def cache_status(self) -> str:
        return self.headers.get("cache-status", "")

    @property
    def hit(self) -> bool:
        return "; hit" in self.cache_status


def _reply(response: httpx.Response) -> Reply:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Reply(response.status_code, headers, response.content)


class Harness:
    """Send requests, move the clock, read the origin's counters."""

    kind = ""
    runtime: Any = None
    origin: Origin | None = None

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        raise NotImplementedError

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def many(self, method: str, path: str, count: int, headers: dict[str, str] | None = None) -> list[Reply]:
        """``count`` identical requests at once."""
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda _: self.request(method, path, headers), range(count)))

    def control(self, path: str) -> bytes:
        return self.request("POST" if not path.startswith("/__calls") else "GET", path).body

    def advance(self, seconds: float) -> None:
        self.control(f"/__advance?s={seconds}")

    def calls(self, path: str) -> int:
        return int(json.loads(self.control(f"/__calls?path={path}")))

    def fail(self, mode: str) -> None:
        self.control(f"/__fail?mode={mode}")

    def eventually(self, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` (a background refresh finishing), up to a generous deadline."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            self.idle()

    def idle(self) -> None:
        time.sleep(0.01)

    def close(self) -> None:
        pass


class HTTPHarness(Harness):
    def __init__(self, kind: str, base_url: str) -> None:
        self.kind = kind
        self.client = httpx.Client(base_url=base_url, timeout=WAIT_SECONDS)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        # Every request is a new visitor: no Cookie picked up from an earlier Set-Cookie (a
        # rule never stores the answer to a request with credentials).
        self.client.cookies.clear()
        return _reply(self.client.request(method, path, headers=headers))

    def close(self) -> None:
        self.client.close()


class WSGIHarness(Harness):
    kind = "wsgi"

    def __init__(self, **cache: Any) -> None:
        self.clock = FakeClock()
        self.origin = Origin(self.clock)
        self.app, self.runtime = build_wsgi(self.origin, self.clock, **cache)
        self.client = httpx.Client(transport=httpx.WSGITransport(app=self.app),
                                   base_url="http://test", timeout=WAIT_SECONDS)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        return _reply(self.client.request(method, path, headers=headers))

    def close(self) -> None:
        self.runtime.close()


class ASGIHarness(Harness):
    """Runs the ASGI app on a private event loop that also runs background refresh tasks."""

    kind = "asgi"

    def __init__(self, **cache: Any) -> None:
        self.clock = FakeClock()
        self.origin = Origin(self.clock)
        self.app, self.runtime = build_asgi(self.origin, self.clock, **cache)
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://test", timeout=WAIT_SECONDS)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.loop.run_until_complete(self._request(method, path, headers))

    async def _request(self, method: str, path: str, headers: dict[str, str] | None) -> Reply:
        return _reply(await self.client.request(method, path, headers=headers))

    def many(self, method: str, path: str, count: int, headers: dict[str, str] | None = None) -> list[Reply]:
        async def all_at_once() -> list[Reply]:
            return list(await asyncio.gather(*(self._request(method, path, headers) for _ in range(count))))
        return self.loop.run_until_complete(all_at_once())

    def idle(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0.01))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()
        self.runtime.close()


DIRECT_KINDS = ("wsgi", "asgi")
SERVER_KINDS = ("gunicorn", "uvicorn")


def direct(kind: str, **cache: Any) -> Harness:
    return WSGIHarness(**cache) if kind == "wsgi" else ASGIHarness(**cache)


@contextlib.contextmanager
def server(kind: str) -> Iterator[Harness]:
    from tests.servers import run_server

    target = "tests.cache.origin_app:" + ("wsgi_app" if kind == "gunicorn" else "asgi_app")
    extra: Sequence[str] = ("--threads", "16") if kind == "gunicorn" else ()
    with run_server(kind, target, extra_args=extra) as base_url:  # type: ignore[arg-type]
        harness = HTTPHarness(kind, base_url)
        try:
            yield harness
        finally:
            harness.close()
