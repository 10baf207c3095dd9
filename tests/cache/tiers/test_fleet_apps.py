"""Two wrapped app instances in separate real servers sharing one Redis (server, then cluster).

Instance A is the WSGI app under gunicorn, instance B the ASGI app under uvicorn, each with
its own state directory (as on two hosts). Shown: they share L2; a purge on A reaches B (the
delay is recorded); stopping Redis mid-traffic gives no 5xx and no wrong response; restarting
it resumes L2 and invalidation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import run_server

from .servers import RedisCluster, RedisServer, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.server, pytest.mark.slow]

TOKEN = "fleet-purge-token-0123456789"
HOST = {"host": "shop.example"}


class Instances:
    def __init__(self, a: str, b: str, version_file: Path) -> None:
        self.urls = {"a": a, "b": b}
        self.version_file = version_file
        # Idle connections are dropped before either server's keep-alive timeout (gunicorn 2 s,
        # uvicorn 5 s) can close them: the test idles for seconds while Redis restarts, and a
        # request sent on a connection the server is just closing fails with "Server
        # disconnected without sending a response" (seen once in CI, on the Cluster restart).
        self.client = httpx.Client(timeout=10.0, limits=httpx.Limits(keepalive_expiry=1.0))

    def set_version(self, version: int) -> None:
        self.version_file.write_text(str(version))

    def get(self, instance: str, item: int) -> httpx.Response:
        return self.client.get(f"{self.urls[instance]}/item/{item}", headers=HOST)

    def purge(self, instance: str, tag: str) -> httpx.Response:
        return self.client.post(f"{self.urls[instance]}/_scalekit/purge", params={"tag": tag},
                                headers={**HOST, "authorization": f"Bearer {TOKEN}"})



@pytest.fixture(params=["server", "cluster"], scope="module")
def redis_backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    backend = RedisServer().start() if request.param == "server" else RedisCluster().start()
    yield backend
    backend.close()


@pytest.fixture()
def instances(redis_backend: Any, tmp_path: Path) -> Iterator[Instances]:
    version_file = tmp_path / "version"
    version_file.write_text("1")
    common = {
        "SCALEKIT_REDIS_URL": redis_backend.url,
        "SCALEKIT_REDIS_CLUSTER": "true" if isinstance(redis_backend, RedisCluster) else "false",
        "SCALEKIT_REDIS_KEY_PREFIX": f"apps{time.monotonic_ns()}:",
        # Generous timeouts: two shared cores; the cool-down short so the test recovers fast.
        "SCALEKIT_REDIS_SOCKET_TIMEOUT_SECONDS": "0.5",
        "SCALEKIT_REDIS_CONNECT_TIMEOUT_SECONDS": "0.5",
        "SCALEKIT_REDIS_CIRCUIT_COOL_DOWN_SECONDS": "0.5",
        "SCALEKIT_CACHE_INVALIDATION_PURGE_TOKEN": TOKEN,
        "SCALEKIT_CACHE_INVALIDATION_MAX_STALENESS_SECONDS": "1.0",
        "SCALEKIT_CACHE_INVALIDATION_HEARTBEAT_SECONDS": "0.2",
        "FLEET_VERSION_FILE": str(version_file),
    }
    with ExitStack() as stack:
        a = stack.enter_context(run_server(
            "gunicorn", "tests.cache.tiers.fleet_app:wsgi_app",
            env={**common, "SCALEKIT_STATE_DIR": str(tmp_path / "host-a")},
            extra_args=("--threads", "4")))
        b = stack.enter_context(run_server(
            "uvicorn", "tests.cache.tiers.fleet_app:asgi_app",
            env={**common, "SCALEKIT_STATE_DIR": str(tmp_path / "host-b")}))
        running = Instances(a, b, version_file)
        yield running
        running.client.close()


def body(item: int, version: int) -> str:
    return f"item={item};version={version}"


def test_fleet_shares_l2_propagates_invalidation_and_survives_redis_outages(
        instances: Instances, redis_backend: Any) -> None:
    # --- L2 is shared: what A stored, B serves from Redis without calling its origin.
    first = instances.get("a", 1)
    assert first.status_code == 200 and first.text == body(1, 1)
    instances.set_version(99)  # an origin call on B would now show version 99
    wait_until(lambda: "detail=redis" in instances.get("b", 1).headers.get("cache-status", ""),
               "B to hit A's entry in Redis", pause_seconds=0.01)
    assert instances.get("b", 1).text == body(1, 1)

    # --- A purge on A reaches B.
    instances.set_version(2)
    assert instances.purge("a", "item:1").status_code == 200
    assert instances.get("a", 1).text == body(1, 2)  # at once on A
    seen: set[str] = set()

    def b_is_fresh() -> bool:
        text = instances.get("b", 1).text
        seen.add(text)
        return text == body(1, 2)

    delay = wait_until(b_is_fresh, "the purge on B", pause_seconds=0.01)
    print(f"purge on A seen on B after {delay * 1000:.1f} ms (polling upper bound)")
    assert seen <= {body(1, 1), body(1, 2)}
    assert all(instances.get("b", 1).text == body(1, 2) for _ in range(5))

    # --- And the other way round: a purge on the ASGI instance (ainvalidate) reaches A.
    assert instances.get("a", 8).text == body(8, 2)
    instances.set_version(22)
    assert instances.purge("b", "item:8").status_code == 200
    wait_until(lambda: instances.get("a", 8).text == body(8, 22), "B's purge on A", pause_seconds=0.01)
    instances.set_version(2)

    # --- Redis stops mid-traffic: no 5xx, no wrong response.
    failures: list[str] = []
    stop = threading.Event()

    def traffic(instance: str) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not stop.is_set():
                for item in range(1, 6):
                    response = client.get(f"{instances.urls[instance]}/item/{item}", headers=HOST)
                    if response.status_code != 200 or response.text != body(item, 2):
                        failures.append(f"{instance} {item}: {response.status_code} {response.text!r}")

    threads = [threading.Thread(target=traffic, args=(name,)) for name in ("a", "b", "a", "b")]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # traffic with Redis up
    redis_backend.stop()
    time.sleep(2.0)  # traffic with Redis down, past the staleness bound
    stop.set()
    for thread in threads:
        thread.join(30)
    assert failures == []

    # --- Redis restarts: L2 and invalidation resume.
    if isinstance(redis_backend, RedisCluster):
        redis_backend.restart()
    else:
        redis_backend.start()
    instances.set_version(3)

    def a_stored_b_hits_redis() -> bool:
        item = 100 + int(time.monotonic() * 1000) % 100_000  # a fresh key each try
        instances.get("a", item)
        return "detail=redis" in instances.get("b", item).headers.get("cache-status", "")

    wait_until(a_stored_b_hits_redis, "L2 to be shared again", pause_seconds=0.01)
    assert instances.get("b", 7).text == body(7, 3)  # cached on B now
    instances.set_version(4)

    def purge_reaches_b() -> bool:
        # Retried: A's breaker may still be cooling down after the restart (then the purge is
        # applied on A and replayed to the fleet once A's listener is back).
        instances.purge("a", "item:7")
        return instances.get("b", 7).text == body(7, 4)

    wait_until(purge_reaches_b, "invalidation across the fleet after the restart", pause_seconds=0.01)


def test_restarted_instance_keeps_disk_entries_but_never_serves_one_invalidated_while_down(
        tmp_path: Path) -> None:
    server = RedisServer().start()
    version_file = tmp_path / "version"
    version_file.write_text("1")
    prefix = f"restart{time.monotonic_ns()}:"
    common = {
        "SCALEKIT_REDIS_URL": server.url, "SCALEKIT_REDIS_KEY_PREFIX": prefix,
        "SCALEKIT_REDIS_SOCKET_TIMEOUT_SECONDS": "0.5",
        "SCALEKIT_CACHE_INVALIDATION_PURGE_TOKEN": TOKEN, "FLEET_VERSION_FILE": str(version_file),
    }
    host_a = {**common, "SCALEKIT_STATE_DIR": str(tmp_path / "host-a")}
    client = httpx.Client(timeout=10.0, headers=HOST)
    try:
        with run_server("uvicorn", "tests.cache.tiers.fleet_app:asgi_app", env=host_a) as a:
            for item in (1, 2, 3, 4):
                assert client.get(f"{a}/item/{item}").text == body(item, 1)
        # A is down. Another instance invalidates item 1; Redis forgets the shared entries,
        # so whatever A serves after its restart comes from its own disk or its origin.
        with run_server("gunicorn", "tests.cache.tiers.fleet_app:wsgi_app",
                        env={**common, "SCALEKIT_STATE_DIR": str(tmp_path / "host-b")}) as b:
            version_file.write_text("2")
            assert client.post(f"{b}/_scalekit/purge", params={"tag": "item:1"},
                               headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        for key in server.cli("--scan", "--pattern", f"{prefix}e:*").split():
            server.cli("del", key)
        with run_server("uvicorn", "tests.cache.tiers.fleet_app:asgi_app", env=host_a) as a:
            assert client.get(f"{a}/item/1").text == body(1, 2)  # never the invalidated v1
            from_disk = []
            for item in (2, 3, 4):
                time.sleep(0.3)  # let the listener resync: until then A trusts nothing tagged
                response = client.get(f"{a}/item/{item}")
                assert response.text in (body(item, 1), body(item, 2))
                if "detail=disk" in response.headers.get("cache-status", ""):
                    from_disk.append(item)
                    assert response.text == body(item, 1)
            assert from_disk, "no entry survived on disk across the restart"
            assert client.get(f"{a}/item/1").text == body(1, 2)
    finally:
        client.close()
        server.close()
