"""The container's defaults, run here: the example shop (gunicorn.conf.py's default APP_MODULE)
with the compose file's app environment, its assets built by the Dockerfile's command, behind the
shipped edge (nginx, Varnish, nginx), and the compose file's Redis command with its password.
What cannot run on this machine is swapped for a local equivalent: Postgres for a SQLite file,
the compose network's addresses for loopback (Varnish's purge address among them).

As shipped, the edge is purged: a price change made through the shop, and ``scalekit
invalidate`` run with the compose environment, each make Varnish stop serving the old page
within a second (polled against that deadline).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.edge.varnish import running_varnish
from tests.servers import REPO_ROOT, free_port

from .artefacts import SAMPLE_SECRETS, compose_app_environment
from .conftest import require_binary
from .harness import DEPLOY, AppInstance, render_nginx_config, run_nginx, run_shipped_redis

pytestmark = [pytest.mark.nginx, pytest.mark.server, pytest.mark.redis, pytest.mark.slow]


def dockerfile_static_dir() -> str:
    match = re.search(r"^ARG STATIC_DIR=(\S+)$", (DEPLOY / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert match is not None
    return match.group(1)


def build_assets_as_the_dockerfile_does(destination: Path) -> None:
    assert "scalekit assets build --quiet" in (DEPLOY / "Dockerfile").read_text()
    # The `scalekit` console script, or the same click group through this interpreter.
    script = shutil.which("scalekit")
    command = [script] if script else [sys.executable, "-m", "scalekit.cli"]
    result = subprocess.run([*command, "assets", "build", "--quiet", dockerfile_static_dir(), str(destination)],
                            cwd=REPO_ROOT, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (destination / "manifest.json").is_file()


def sample(instance: AppInstance, name: str, **labels: str) -> float:
    """The sum of metric ``name``'s samples with ``labels``, from the instance's own /metrics."""
    text = httpx.get(instance.url + "/metrics", timeout=10).text
    return sum(found.value for family in text_string_to_metric_families(text) for found in family.samples
               if found.name == name and labels.items() <= found.labels.items())


def app_requests(instance: AppInstance, route: str, *, at_least: float = 0.0) -> float:
    """Requests the app counted for ``route``, once at least ``at_least`` (or after 20 s): with
    several workers the scrape may land on one whose sibling's counts reach the shared files
    with its next flush (every 0.5 s)."""
    deadline = time.monotonic() + 20
    while (counted := sample(instance, "scalekit_http_requests_total", route=route, method="GET")) < at_least \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    return counted


def test_example_shop_runs_behind_the_edge_with_the_shipped_settings(tmp_path: Path) -> None:
    binary = require_binary("nginx")
    static_root = tmp_path / "srv"
    build_assets_as_the_dockerfile_does(static_root / "static")
    environment = compose_app_environment(SAMPLE_SECRETS)
    environment.pop("APP_MODULE")   # gunicorn.conf.py's own default must be the example shop
    environment.pop("SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD")   # Postgres's; SQLite has none
    environment.update({
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "SCALEKIT_POOL_DATABASES_DEFAULT_URL": f"sqlite:///{tmp_path / 'shop.sqlite3'}",
        "SCALEKIT_CDN_ASSETS_MANIFEST": str(static_root / "static" / "manifest.json"),
    })
    with run_shipped_redis(tmp_path / "redis", SAMPLE_SECRETS["REDIS_PASSWORD"]) as redis_port:
        # The compose file's Redis (its command, its password); the app authenticates with
        # SCALEKIT_REDIS_PASSWORD from the compose environment.
        environment["SCALEKIT_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        run_the_shop(tmp_path, environment, binary, static_root)
        l2 = redis.Redis(port=redis_port, password=SAMPLE_SECRETS["REDIS_PASSWORD"])
        assert l2.dbsize() > 0   # the pages reached L2 too
        l2.close()


def run_the_shop(tmp_path: Path, environment: dict[str, str], binary: str, static_root: Path) -> None:
    fleet_port, purge_port = free_port(), free_port()
    assert environment["SCALEKIT_CDN_PURGE_TARGETS_EDGE_URLS"] == "http://varnish:6091"
    environment["SCALEKIT_CDN_PURGE_TARGETS_EDGE_URLS"] = f"http://127.0.0.1:{purge_port}"
    instance = AppInstance("shop", tmp_path, target=None, workers=int(environment["WEB_CONCURRENCY"]),
                           threads=int(environment["THREADS"]), env=environment, ready_path="/metrics")
    try:
        instance.start()
        port = free_port()
        host = {"Host": environment["SCALEKIT_ALLOWED_HOSTS"].split(",")[0]}
        with running_varnish(fleet_port, purge_port=purge_port) as cache:
            config = render_nginx_config(tmp_path / "nginx", listen_port=port, upstream_ports=[instance.port],
                                         static_root=static_root, cache_port=cache.port, fleet_port=fleet_port)
            with run_nginx(binary, config, port) as url, \
                    httpx.Client(base_url=url, headers=host, timeout=10) as client:
                shop_through_the_edge(client, instance)
                the_edge_is_purged(client, environment)
    finally:
        instance.stop()


def shop_through_the_edge(client: httpx.Client, instance: AppInstance) -> None:
    """As shipped, pages are cached at the edge and in the app: the app stamps shared freshness
    (the CDN policy), stores the page in its own tiers, and the edge answers the second request
    without asking the app."""
    for target in ("/", "/products/1", "/api/products/1"):
        first = client.get(target)
        assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS", target
        assert "s-maxage=" in first.headers["cache-control"], target
        assert "stored" in first.headers["cache-status"], target
        second = client.get(target)
        assert second.headers["x-cache-status"] == "HIT" and second.content == first.content, target
    assert app_requests(instance, "/", at_least=1) == 1
    # Another host is served, never cached by the app, and says why.
    other = client.get("/", headers={"Host": "elsewhere.example"})
    assert other.status_code == 200
    assert other.headers["cache-status"] == "scalekit; fwd=bypass; detail=host-not-allowed"
    assert sample(instance, "scalekit_host_rejected_total", layer="cache") >= 1
    page = client.get("/")
    assets = re.findall(r'"(/static/[^"]+)"', page.text)
    assert assets, "the shop links its fingerprinted assets"
    for asset in assets:
        response = client.get(asset, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200, asset
        assert "immutable" in response.headers["cache-control"]
        assert "x-cache-status" not in response.headers   # from disk, never via the app
    product = client.get("/api/products/1")
    assert product.status_code == 200 and product.json()["id"] == 1
    assert client.get("/metrics").status_code == 404




def until(predicate: Callable[[], bool], seconds: float = 1.0) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` have passed (a bound, not a speed test)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def the_edge_is_purged(client: httpx.Client, environment: dict[str, str]) -> None:
    def price() -> int:
        return int(client.get("/api/products/1").json()["price_cents"])

    before = price()
    assert client.get("/api/products/1").headers["x-cache-status"] == "HIT"
    changed = client.post("/api/products/1/price", json={"price_cents": before + 100})
    assert changed.status_code == 200 and changed.headers["x-cache-status"] == "BYPASS"
    assert until(lambda: price() == before + 100), "Varnish served the old price 1 s after the change"
    assert client.get("/api/products/1").headers["x-cache-status"] == "HIT"   # cached again

    # scalekit invalidate, with the compose environment: the CLI reaches the edge too.
    page = client.get("/products/1")
    assert client.get("/products/1").headers["x-cache-status"] == "HIT"
    result = subprocess.run([sys.executable, "-m", "scalekit.cli", "invalidate", "--tag", "product:1"],
                            env={**os.environ, **environment}, cwd=REPO_ROOT, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "edge purge queued for edge" in result.stdout
    assert until(lambda: client.get("/products/1").headers["x-cache-status"] == "MISS")
    assert client.get("/products/1").text == page.text
