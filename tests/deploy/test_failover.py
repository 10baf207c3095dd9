"""Losing an instance behind the shipped nginx: no idempotent request lost, the survivors take
the traffic, the instance rejoins by itself; and the edge serves stale pages when all are down.

Each test starts its own fleet (it stops and restarts instances). Waits poll for a condition
with a generous deadline; the one fixed wait is for a 1-second edge entry to expire, since nginx
has no clock to inject.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import Edge, start_edge

pytestmark = [pytest.mark.nginx, pytest.mark.server, pytest.mark.slow]

# Long enough that the first slow GETs are still in flight when the last POST has started and
# an instance is killed, on a loaded machine, with Varnish in the chain.
SLOW_SECONDS = 3.0
# The crash test's GETs must still be in flight when app3 is killed, after two waits that a
# busy 2-core machine once stretched past SLOW_SECONDS (app3 had answered its GETs already).
CRASHED_GET_SECONDS = 2 * SLOW_SECONDS
DEADLINE_SECONDS = 25.0   # > fail_timeout (10 s) + generous start-up on a shared 2-core machine


def wait_for(condition: Callable[[], bool], what: str, timeout_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_seconds} s waiting until {what}")


class InFlight:
    """Requests sent on their own threads and connections, so they are in flight together."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[str, int, str]] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def send(self, method: str, target: str) -> None:
        def run() -> None:
            with httpx.Client(timeout=30) as client:
                response = client.request(method, self.url + target)
            with self.lock:
                self.results.append((method, response.status_code, response.text))

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> list[tuple[str, int, str]]:
        for thread in self.threads:
            thread.join(timeout=60)
        return self.results


def slow_in_flight_per_instance(edge: Edge, expected: int) -> Callable[[], bool]:
    return lambda: all(count >= expected for count in edge.counts("/slow").values()) and \
        len(edge.counts("/slow")) == len([i for i in edge.fleet if i.process is not None])


def spread(edge: Edge, requests: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        for _ in range(requests):
            response = client.get("/whoami")
            assert response.status_code == 200, response.text
            seen[response.json()["instance"]] += 1
    return seen


def rejoin(edge: Edge, instance_index: int) -> None:
    """Restart the instance on its port; nginx sends it traffic again after fail_timeout."""
    instance = edge.fleet[instance_index]
    instance.start()
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        wait_for(lambda: client.get("/whoami").json()["instance"] == instance.instance_id,
                 f"{instance.instance_id} answers through nginx again")
    seen = spread(edge, 150)
    assert set(seen) == {"app1", "app2", "app3"}, seen
    for name, count in seen.items():
        assert 42 <= count <= 58, (name, seen)   # 50 +- 15 %: a full member of the fleet again


def test_crashed_instance_loses_no_idempotent_request_and_rejoins(tmp_path: Path) -> None:
    with start_edge(tmp_path) as edge:
        # Two slow GETs and one slow POST in flight on every instance (least_conn with ties
        # broken round-robin spreads them evenly), then app3 crashes (SIGKILL).
        flight = InFlight(edge.url)
        for n in range(6):   # distinct URLs: identical ones would queue on the edge cache lock
            flight.send("GET", f"/slow?seconds={CRASHED_GET_SECONDS}&n={n}")
        wait_for(slow_in_flight_per_instance(edge, 2), "every instance has two slow GETs in flight")
        for n in range(3):
            flight.send("POST", f"/slow?seconds={SLOW_SECONDS}&n={n}")
        wait_for(slow_in_flight_per_instance(edge, 3), "every instance has a slow POST in flight")
        edge.fleet[2].stop(kill=True)
        results = flight.join()

        gets = [(status, body) for method, status, body in results if method == "GET"]
        posts = [(status, body) for method, status, body in results if method == "POST"]
        # Every GET succeeded: the two that were on app3 were retried on a survivor.
        assert [status for status, _ in gets] == [200] * 6, gets
        assert not any("app3" in body for _, body in gets)
        # The POST on app3 was not retried (it may have had effects): the client gets the 502.
        assert sorted(status for status, _ in posts) == [200, 200, 502], posts
        retried = [line for line in edge.access_log() if "/slow" in line and ", " in line.split("upstream=")[1]]
        assert len(retried) == 2 and all(line.split('"')[1].startswith("GET") for line in retried), retried

        # With app3 gone, traffic goes to the other two and nothing fails.
        seen = spread(edge, 60)
        assert set(seen) == {"app1", "app2"}, seen

        rejoin(edge, 2)


def test_gracefully_stopped_instance_finishes_its_requests_and_the_others_take_over(tmp_path: Path) -> None:
    with start_edge(tmp_path) as edge:
        flight = InFlight(edge.url)
        for n in range(6):   # distinct URLs: identical ones would queue on the edge cache lock
            flight.send("GET", f"/slow?seconds={SLOW_SECONDS}&n={n}")
        wait_for(slow_in_flight_per_instance(edge, 2), "every instance has two slow GETs in flight")
        # A rolling update's SIGTERM: app3 stops accepting, finishes what it has, exits.
        edge.fleet[2].stop()
        results = flight.join()
        assert [status for _, status, _ in results] == [200] * 6, results
        assert sum("app3" in body for _, _, body in results) == 2   # it finished its own two

        # Requests keep succeeding, on the other two, while app3 is away. (Rejoining after a
        # restart is the same as after a crash, shown above.)
        seen = spread(edge, 60)
        assert set(seen) == {"app1", "app2"}, seen


def test_edge_serves_a_stale_page_when_the_whole_fleet_is_down(tmp_path: Path) -> None:
    with start_edge(tmp_path, count=1) as edge:
        with httpx.Client(base_url=edge.url, timeout=10) as client:
            first = client.get("/short")               # public, s-maxage=1
            assert first.headers["x-cache-status"] == "MISS"
            edge.fleet[0].stop()
            time.sleep(1.5)                            # let the 1 s edge entry expire
            stale = client.get("/short")
        assert stale.status_code == 200
        assert stale.headers["x-cache-status"] == "STALE"
        assert stale.text == first.text
