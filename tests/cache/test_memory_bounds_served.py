"""The memory bound as the attack measured it: a worker's resident size under a real server
(uvicorn), flooded with requests carrying huge unique query strings and Host values that are
answered 404 and never stored. Each such request once left its strings in a memo (about 60 KiB
apiece: 1,000 of them would add some 100 MiB); the worker now grows by less than 20 MiB.
tests/cache/test_memory_bounds.py measures the same in process with tracemalloc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.servers import run_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

FLOOD = 1000
QUERY_BYTES = 60 * 1024
HOST_BYTES = 4 * 1024
BOUND_MIB = 20


def resident_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def worker_pid(url: str) -> int:
    """The process listening on ``url``'s port (uvicorn with one worker serves in it)."""
    port = url.rsplit(":", 1)[1]
    found = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    pids = {int(part.split("=")[1].rstrip(",)")) for part in found.replace("(",
        ",").split(",") if part.startswith("pid=")}
    assert len(pids) == 1, found
    return pids.pop()


def test_a_flood_of_unique_huge_strings_leaves_the_worker_no_larger() -> None:
    filler, host_filler = "x" * QUERY_BYTES, "h" * HOST_BYTES
    with run_server("uvicorn", "tests.cache.flood_app:app") as url, httpx.Client(base_url=url, timeout=30) as client:
        for index in range(100):   # warm up: imports, first allocations, the one cached page
            client.get(f"/warm/{index}?q={index}")
            client.get("/page")
        pid = worker_pid(url)
        before = resident_mib(pid)
        for index in range(FLOOD // 2):
            assert client.get(f"/missing/{index}?q={index}{filler}").status_code == 404
            assert client.get(f"/missing/{index}", headers={"host": f"{host_filler}{index}.test"}).status_code == 404
        grown = resident_mib(pid) - before
    assert grown < BOUND_MIB, f"the worker grew by {grown} MiB over {FLOOD} flooding requests"
