"""Fixtures of the deploy suite: the binaries it drives, and a fleet of three behind nginx."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scalekit.cdn.assets import build_assets
from tests.edge.varnish import Varnish, running_varnish
from tests.servers import free_port

from .harness import (
    AppInstance,
    nginx_binary,
    render_nginx_config,
    resolving_nginx_binary,
    run_fleet,
    run_nginx,
)

# What the test command must install when a binary is missing (Debian 12 packages).
INSTALL_HINT = {
    "nginx": "apt-get install -y nginx-light (Debian 12: gzip_static and realip are built in)",
    "promtool": "apt-get install -y prometheus (provides /usr/bin/promtool and /usr/bin/prometheus)",
    "prometheus": "apt-get install -y prometheus",
    "nginx-resolve": "tests/deploy/fetch_nginx.sh (an nginx 1.27.3 or newer, for 'resolve' on upstream servers)",
}

STATIC_CSS = b"body { color: #123456; }\n" * 20
STATIC_CSS_GZ_MARKER = b"precompressed-by-the-build\n"


def require_binary(name: str) -> str:
    """The binary's path, or a skip naming the package that provides it."""
    path = {"nginx": nginx_binary, "nginx-resolve": resolving_nginx_binary}.get(name, lambda: shutil.which(name))()
    if path is None:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT.get(name, name)}")
    return path


@dataclass
class Edge:
    """nginx (test copy of deploy/nginx) in front of Varnish (deploy/varnish) in front of
    nginx's fleet server in front of app instances, all on 127.0.0.1."""

    url: str
    fleet: list[AppInstance]
    workdir: Path
    static_root: Path
    cache: Varnish

    def counts(self, path: str) -> Counter[str]:
        """Requests to ``path`` each instance saw (asked directly, bypassing nginx)."""
        seen: Counter[str] = Counter()
        for instance in self.fleet:
            if instance.process is None:
                continue
            body = json.loads(httpx.get(instance.url + "/_test/counts", timeout=10).text)
            seen[instance.instance_id] = body["counts"].get(path, 0)
        return seen

    def access_log(self) -> list[str]:
        return (self.workdir / "nginx" / "access.log").read_text().splitlines()


def make_static_root(workdir: Path) -> Path:
    """The static folder the Dockerfile builds (``scalekit assets build``: fingerprinted names,
    .gz/.br twins, manifest.json), plus one hand-made pair whose .gz twin carries a marker."""
    root = workdir / "srv"
    source = workdir / "assets-src"
    (source / "css").mkdir(parents=True)
    (source / "css" / "shop.css").write_text(".product { margin: 0 auto; }\n" * 200)
    build_assets(source, root / "static")
    (root / "static" / "app.3f2a9c.css").write_bytes(STATIC_CSS)
    # The .gz twin carries a marker, to prove nginx sent the file from disk (gzip_static)
    # rather than compressing on the fly.
    (root / "static" / "app.3f2a9c.css.gz").write_bytes(STATIC_CSS_GZ_MARKER)
    return root


@contextlib.contextmanager
def start_edge(workdir: Path, count: int = 3, **instance_settings: Any) -> Iterator[Edge]:
    """Start ``count`` instances and the edge in front of them; stop everything on exit."""
    binary = require_binary("nginx")
    static_root = make_static_root(workdir)
    fleet_port, purge_port = free_port(), free_port()
    with running_varnish(fleet_port, purge_port=purge_port) as cache, \
            run_fleet(workdir, count, **instance_settings) as fleet:
        port = free_port()
        config = render_nginx_config(workdir / "nginx", listen_port=port,
                                     upstream_ports=[instance.port for instance in fleet],
                                     static_root=static_root, cache_port=cache.port,
                                     fleet_port=fleet_port)
        with run_nginx(binary, config, port) as url:
            yield Edge(url, fleet, workdir, static_root, cache)


@pytest.fixture(scope="session")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """One fleet of three behind nginx, shared by the read-only tests (each asks for its own
    URLs, and counts what the fleet saw as a difference)."""
    with start_edge(tmp_path_factory.mktemp("edge")) as running:
        yield running
