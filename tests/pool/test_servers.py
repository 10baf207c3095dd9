"""A smaller run under real servers (gunicorn with threads and several workers, uvicorn):
mixed outcomes including clients that leave mid-stream; afterwards no connection is checked
out in any worker (the livesum gauges of gunicorn's multiprocess mode say so) and Postgres has
no transaction left open. And gunicorn --preload: workers never use the master's connection."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ..servers import run_server
from .helpers import pg_sessions, pg_url, unique

pytestmark = [pytest.mark.server, pytest.mark.postgres, pytest.mark.slow]

MODES = ("ok", "nodb", "raise", "write", "open_txn", "stream", "stream_raise", "raw",
         "release_early", "rollback", "set", "long_stream")
REQUESTS = 300


def used_connections(base_url: str) -> float | None:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("scalekit_pool_connections{") and 'state="used"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def one_request(client: httpx.Client, base_url: str, mode: str, leave_early: bool) -> str:
    try:
        with client.stream("GET", f"{base_url}/{mode}", timeout=30) as response:
            if leave_early and mode == "long_stream":
                next(response.iter_raw(65536))
                return "left"  # closing the stream here closes the connection mid-body
            response.read()
            return str(response.status_code)
    except httpx.HTTPError as exc:  # a stream that raised mid-body ends the connection
        return type(exc).__name__


def run_mix(base_url: str, application_name: str) -> dict[str, int]:
    rng = random.Random(7)
    plan = [(rng.choice(MODES), rng.random() < 0.7) for _ in range(REQUESTS)]

    def worker(chunk: list[tuple[str, bool]]) -> list[str]:
        with httpx.Client() as client:
            return [one_request(client, base_url, mode, leave) for mode, leave in chunk]

    with ThreadPoolExecutor(8) as executor:
        results = [r for chunk in executor.map(worker, [plan[i::8] for i in range(8)]) for r in chunk]
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result] = outcomes.get(result, 0) + 1
    # Every worker gives its connections back once the responses are over; a worker notices a
    # client that left only when its next write fails, so poll (generously) rather than sleep.
    deadline = time.monotonic() + 20
    while used_connections(base_url) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert used_connections(base_url) == 0, outcomes
    sessions = pg_sessions(application_name)
    assert sessions.get("idle in transaction", 0) == 0, sessions
    assert sessions.get("idle in transaction (aborted)", 0) == 0, sessions
    assert outcomes.get("200", 0) > REQUESTS / 3 and outcomes.get("500", 0) > 0, outcomes
    assert "left" in outcomes, outcomes
    return outcomes


def test_gunicorn_threads_and_workers(pg_table: str, tmp_path: Path) -> None:
    application_name = unique("sk_gunicorn")
    (tmp_path / "metrics").mkdir()
    env = {"SK_POOL_URL": pg_url(application_name), "SK_POOL_TABLE": pg_table,
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with run_server("gunicorn", "tests.pool.server_app:wsgi_app", env=env, workers=2,
                    extra_args=["-c", "python:scalekit.gunicorn_conf", "--threads", "4"]) as url:
        run_mix(url, application_name)
    assert pg_sessions(application_name) == {}  # workers closed their pools at exit


def test_uvicorn(pg_table: str) -> None:
    application_name = unique("sk_uvicorn")
    env = {"SK_POOL_URL": pg_url(application_name), "SK_POOL_TABLE": pg_table}
    with run_server("uvicorn", "tests.pool.server_app:asgi_app", env=env) as url:
        run_mix(url, application_name)


def test_gunicorn_preload_workers_do_not_share_the_masters_connection(pg_table: str) -> None:
    application_name = unique("sk_preload")
    env = {"SK_POOL_URL": pg_url(application_name), "SK_POOL_TABLE": pg_table, "SK_POOL_WARM": "1"}
    with run_server("gunicorn", "tests.pool.server_app:wsgi_app", env=env, workers=2,
                    extra_args=["--preload"]) as url, httpx.Client() as client:
        answers = {client.get(f"{url}/backend", timeout=10).text for _ in range(20)}
    pairs = [answer.split() for answer in answers]
    warm = {master for _, master in pairs}
    assert len(warm) == 1 and "none" not in warm  # every worker inherited the master's pool...
    assert all(now != master for now, master in pairs)  # ...and none of them used it
