"""A Starlette app with a WebSocket, server-sent events and a session greeting, served by
``scalekit serve`` under each ASGI server it offers (uvicorn, granian), with a cache rule that
covers every path. Two browsers with their own cookies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from .live.app import EVENT_COUNT
from .support import ASGI_SERVERS, Served, browser, serving

pytestmark = pytest.mark.server

RULES = json.dumps([{"path": "/*", "ttl_seconds": 60}])


@pytest.fixture(scope="module", params=ASGI_SERVERS)
def live(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serving("tests.realapps.live.app:app", request.param,
                 env={"SCALEKIT_CACHE_RULES": RULES}) as served:
        yield served


def test_a_websocket_echoes_under_the_server(live: Served) -> None:
    ws_url = live.url.replace("http://", "ws://") + "/ws"
    for _ in range(2):  # a second upgrade is not answered from anything stored by the first
        with connect(ws_url, open_timeout=20, close_timeout=5) as websocket:
            websocket.send("ping")
            assert websocket.recv(timeout=20) == "echo: ping"
            websocket.send("pong")
            assert websocket.recv(timeout=20) == "echo: pong"


def test_a_public_page_is_cached_and_a_greeting_stays_with_its_user(live: Served) -> None:
    with browser(live) as alice, browser(live) as bob:
        alice.get("/")
        assert "hit" in alice.get("/").headers["cache-status"]
        assert alice.post("/login", data={"user": "alice"}).status_code == 303
        assert alice.get("/greeting").text == "hello alice"
        assert bob.get("/greeting").text == "hello stranger"
        assert bob.post("/login", data={"user": "bob"}).status_code == 303
        assert bob.get("/greeting").text == "hello bob"
        assert alice.get("/greeting").text == "hello alice"


def _events(client: httpx.Client) -> list[str]:
    with client.stream("GET", "/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return [line for line in response.iter_lines() if line.startswith("data: ")]


def test_server_sent_events_are_never_replayed(live: Served) -> None:
    with browser(live) as alice, browser(live) as bob:
        first, second = _events(alice), _events(bob)
    assert len(first) == len(second) == EVENT_COUNT
    assert first[0].split()[2] != second[0].split()[2]  # each client its own stream


def test_server_sent_events_arrive_as_they_are_produced(live: Served) -> None:
    gate = uuid.uuid4().hex
    with browser(live) as alice, browser(live) as other, \
            alice.stream("GET", f"/events?gate={gate}", timeout=httpx.Timeout(20, read=10)) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        # The stream holds after its first event until released: only a live pass-through
        # delivers that event now (a buffering layer waits for the end, and the read times out).
        assert next(lines).endswith("event 0")
        assert other.post(f"/release?gate={gate}").text == "released"
        assert [line.split()[-1] for line in lines] == [str(n) for n in range(1, EVENT_COUNT)]

def test_the_allowed_hosts_warning_was_said_once(live: Served) -> None:
    # Not in serve's own process, which imports the app too, and once in the one that serves.
    assert live.log().count("allowed_hosts is '*'") == 1, live.log()
