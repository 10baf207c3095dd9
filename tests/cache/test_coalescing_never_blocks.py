"""Coalescing never holds a client behind a response that will not be stored.

Each test is an attack that held the second client on earlier versions: an SSE stream, a long
poll with other credentials, a slow uncacheable endpoint, a streamed download whose client does
not read, a saturated pool. Nothing is timed: responses are held at gates the test opens, and a
client still waiting when it should have been answered fails on its (generous) read timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from scalekit.cache.coalesce import PassMarks
from scalekit.context import RequestContext, activate, wait_budget
from tests.cache.streams_app import DOWNLOAD_CHUNK, DOWNLOAD_CHUNKS
from tests.servers import run_server

pytestmark = pytest.mark.server

READ_SECONDS = 15.0
WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def uvicorn_url() -> Iterator[str]:
    with run_server("uvicorn", "tests.cache.streams_app:asgi_app") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def gunicorn_url() -> Iterator[str]:
    with run_server("gunicorn", "tests.cache.streams_app:wsgi_app",
                    extra_args=("--threads", "16")) as base_url:
        yield base_url


@pytest.fixture(params=["uvicorn", "gunicorn"])
def any_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=READ_SECONDS)


def origin_calls(base_url: str, name: str) -> int:
    return int(httpx.get(f"{base_url}/__calls?name={name}", timeout=READ_SECONDS).text)


def open_gate(base_url: str, gate: str) -> None:
    httpx.post(f"{base_url}/__open?gate={gate}", timeout=READ_SECONDS).raise_for_status()


def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


class Background:
    """A request on its own thread; ``result()`` joins it."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.value = call()
        except BaseException as exc:  # noqa: BLE001  (re-raised in result())
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self) -> Any:
        self.thread.join(WAIT_SECONDS)
        assert not self.thread.is_alive(), "the request did not finish"
        if self.error is not None:
            raise self.error
        return self.value


# --------------------------------------------------------------------------- over real servers


def test_a_second_sse_client_streams_while_the_first_stream_is_open(uvicorn_url: str) -> None:
    with client(uvicorn_url) as one, client(uvicorn_url) as two, \
            one.stream("GET", "/sse/coalesce-sse") as first:
        first_lines = first.iter_lines()
        assert next(first_lines) == "data: event 0"
        with two.stream("GET", "/sse/coalesce-sse") as second:
            assert second.status_code == 200
            assert next(second.iter_lines()) == "data: event 0"
        open_gate(uvicorn_url, "coalesce-sse-1")
        open_gate(uvicorn_url, "coalesce-sse-2")
        assert [line for line in first_lines if line] == ["data: event 1", "data: event 2"]
    assert origin_calls(uvicorn_url, "coalesce-sse") == 2


def test_a_long_poll_does_not_hold_a_client_with_other_credentials(any_url: str) -> None:
    name = f"longpoll-{any_url.rsplit(':', 1)[-1]}"
    with client(any_url) as one, client(any_url) as two:
        held = Background(lambda: one.get(f"/poll/{name}", headers={
            "authorization": "Bearer alice", "x-hold": "1"}))
        eventually(lambda: origin_calls(any_url, name) == 1)
        other = two.get(f"/poll/{name}", headers={"authorization": "Bearer bob"})
        assert (other.status_code, other.text) == (200, "polled by Bearer bob")
        assert not held.done()
        open_gate(any_url, name)
        assert held.result().text == "polled by Bearer alice"


def test_a_slow_uncacheable_endpoint_is_remembered_so_no_one_waits_for_it(any_url: str) -> None:
    name = f"hfm-{any_url.rsplit(':', 1)[-1]}"
    with client(any_url) as one, client(any_url) as two:
        open_gate(any_url, f"{name}-1")
        assert one.get(f"/slow/{name}").text == "slow call 1"  # no-store: remembered as such
        held = Background(lambda: one.get(f"/slow/{name}"))
        eventually(lambda: origin_calls(any_url, name) == 2)
        open_gate(any_url, f"{name}-3")
        other = two.get(f"/slow/{name}")
        assert other.text == "slow call 3"
        assert not held.done()
        open_gate(any_url, f"{name}-2")
        assert held.result().text == "slow call 2"


def _slow_reader(base_url: str, path: str) -> socket.socket:
    """A client that asks for ``path`` and reads nothing (a tiny receive window)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    # The Host httpx sends too: the same cache key.
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return sock


def test_a_download_whose_client_does_not_read_holds_no_one(uvicorn_url: str) -> None:
    reader = _slow_reader(uvicorn_url, "/download/unread")
    try:
        eventually(lambda: origin_calls(uvicorn_url, "unread") == 1)
        with client(uvicorn_url) as other:
            reply = other.get("/download/unread")
        assert reply.status_code == 200
        assert len(reply.content) == len(DOWNLOAD_CHUNK) * DOWNLOAD_CHUNKS
    finally:
        reader.close()


# --------------------------------------------------------------------------- in process


def _waiting() -> float:
    return REGISTRY.get_sample_value("scalekit_cache_coalesced_waiting") or 0.0


def _pending(database: str) -> float:
    return REGISTRY.get_sample_value("scalekit_pool_pending_requests", {"database": database}) or 0.0


def test_a_waiter_behind_a_saturated_pool_does_not_wait_for_it_twice(tmp_path: Any) -> None:
    """The pool's timeout counts the time a request already waited for a coalesced answer.

    One request holds the only connection; the leader of /page waits for one until the pool's
    timeout and is answered 503; its waiter, released then, has waited longer than that timeout
    already, so it is answered at once instead of waiting in the pool again (where the held
    connection, given back meanwhile, would have served it).
    """
    import scalekit
    from scalekit.pool import db

    hold, leader_gate = threading.Event(), threading.Event()
    database = "default"
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        calls.append(path)
        if path == "/hold":
            db(database).connection()
            calls.append("held")
            hold.wait(WAIT_SECONDS)
        else:
            leader_gate.wait(WAIT_SECONDS)
            db(database).connection()
        start_response("200 OK", [("cache-control", "max-age=60"), ("content-length", "2")])
        return [b"ok"]

    wrapped = scalekit.wrap(app, cdn=False, metrics=False, state_dir=str(tmp_path),
                            allowed_hosts=["test"], cache={"disk": {"enabled": False}},
                            pool={"databases": {database: {"pool_size": 1, "max_overflow": 0,
                                                           "pool_timeout_seconds": 0.3}}})

    def get(path: str) -> Callable[[], int]:
        def call() -> int:
            with httpx.Client(transport=httpx.WSGITransport(app=wrapped, raise_app_exceptions=False),
                              base_url="http://test",
                              timeout=WAIT_SECONDS) as http:
                return http.get(path).status_code
        return call

    holder = Background(get("/hold"))
    eventually(lambda: "held" in calls)
    before = _waiting()
    leader = Background(get("/page"))
    eventually(lambda: "/page" in calls)
    waiter = Background(get("/page"))
    eventually(lambda: _waiting() > before)
    leader_gate.set()
    assert leader.result() == 503
    eventually(lambda: waiter.done() or _pending(database) > 0)
    hold.set()  # a waiter waiting in the pool now would get this connection
    assert waiter.result() == 503
    assert holder.result() == 200


def test_waits_already_made_come_off_later_timeouts() -> None:
    ctx = RequestContext("GET", "/")
    activate(ctx)
    assert wait_budget(1.0) == 1.0
    ctx.waited_seconds = 0.25
    assert wait_budget(1.0) == 0.75
    ctx.waited_seconds = 3.0
    assert wait_budget(1.0) == 0.0


def test_hit_for_miss_marks_are_bounded_in_time_and_bytes() -> None:
    now = [100.0]
    marks = PassMarks(ttl_seconds=10.0, max_bytes=1000, clock=lambda: now[0])
    marks.add("a")
    assert "a" in marks
    now[0] += 10.5
    assert "a" not in marks
    for number in range(200):
        marks.add(f"key-{number:04d}-" + "x" * 40)
    assert marks.size_bytes <= 1000
    assert f"key-0199-{'x' * 40}" in marks and f"key-0000-{'x' * 40}" not in marks
    marks.add("y" * 5000)  # longer than the whole bound: not remembered
    assert "y" * 5000 not in marks
    marks.discard(f"key-0199-{'x' * 40}")
    assert f"key-0199-{'x' * 40}" not in marks
