"""A real nginx proxy_cache in front of a wrapped app caches exactly what the stamps allow.

Debian's nginx-light runs with its own prefix and config in a temp dir, on a free loopback
port, proxying to the app under gunicorn (tests/servers.py). ``X-Cache-Status`` carries
``$upstream_cache_status``; the app's ``/hits`` counts how many requests reached it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scalekit.cdn.assets import build_assets
from tests.servers import free_port, run_server, stop_process_group, wait_for_port

pytestmark = [pytest.mark.nginx, pytest.mark.server]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONFIG = """\
{user}
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=edge:1m max_size=16m inactive=10m use_temp_path=off;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_cache edge;
            proxy_cache_key $scheme$proxy_host$request_uri;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


@contextlib.contextmanager
def run_nginx(prefix: Path, upstream: str) -> Iterator[str]:
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(CONFIG.format(user="user root;" if os.geteuid() == 0 else "", prefix=prefix,
                                    port=port, upstream=upstream.rsplit(":", 1)[1]))
    log_path = prefix / "nginx.out"
    with log_path.open("wb") as log:
        process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        wait_for_port(port, process=process, log_path=log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client, str]]:
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    workdir = tmp_path_factory.mktemp("nginx-edge")
    source = workdir / "assets"
    source.mkdir()
    (source / "app.css").write_bytes(b"body { margin: 0 }\n" * 50)
    build_assets(source, workdir / "dist")
    env = {"SCALEKIT_CDN_ASSETS_MANIFEST": str(workdir / "dist" / "manifest.json")}
    with run_server("gunicorn", "tests.cdn.nginx_app:wsgi_app", env=env) as origin, \
            run_nginx(workdir, origin) as proxy, \
            httpx.Client(base_url=proxy, timeout=20) as client, \
            httpx.Client(base_url=origin, timeout=20) as direct:
        yield client, direct, (workdir / "dist" / "manifest.json").read_text()


def hits(direct: httpx.Client, path: str) -> int:
    return int(direct.get("/hits").json().get(path, 0))


def test_stamped_page_is_a_hit_on_the_second_request(edge: tuple[httpx.Client, httpx.Client, str]) -> None:
    client, direct, _ = edge
    first = client.get("/page")
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    assert first.headers["cache-control"] == "public, max-age=0, s-maxage=60"
    second = client.get("/page")
    assert second.headers["x-cache-status"] == "HIT"
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    assert hits(direct, "/page") == 1


def test_private_page_is_never_cached(edge: tuple[httpx.Client, httpx.Client, str]) -> None:
    client, direct, _ = edge
    statuses = [client.get("/private").headers["x-cache-status"] for _ in range(3)]
    assert statuses == ["MISS", "MISS", "MISS"]  # nginx looked, found nothing, stored nothing
    assert client.get("/private").headers["cache-control"] == "private, no-cache"
    assert hits(direct, "/private") == 4


def test_asset_is_served_immutable_for_a_year(edge: tuple[httpx.Client, httpx.Client, str]) -> None:
    import json

    client, _, manifest = edge
    path = "/static/" + json.loads(manifest)["files"]["app.css"]["path"]
    first = client.get(path)
    assert first.status_code == 200
    directives = {d.strip() for d in first.headers["cache-control"].split(",")}
    assert {"max-age=31536000", "immutable", "public"} <= directives
    assert client.get(path).headers["x-cache-status"] == "HIT"


def test_revalidation_through_nginx_gets_304(edge: tuple[httpx.Client, httpx.Client, str]) -> None:
    client, _, _ = edge
    etag = client.get("/page").headers["etag"]
    assert client.get("/page", headers={"If-None-Match": etag}).status_code == 304
