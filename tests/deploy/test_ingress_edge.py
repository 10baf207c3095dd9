"""The ingress-nginx edge cache (deploy/k8s/ingress.yaml + ingress-nginx/controller-configmap.yaml)
is the same as deploy/nginx/, and really works: its snippets, dropped into an nginx config the
way the controller places them (http-snippet at http level, configuration-snippet inside the
location), pass ``nginx -t`` and cache in front of a real instance.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

from .artefacts import K8S_DIR, k8s_object
from .conftest import require_binary
from .harness import NGINX_DIR, AppInstance, nginx_test, run_nginx

pytestmark = [pytest.mark.nginx]

CACHE_DIRECTIVE = re.compile(r"^\s*((?:proxy_cache|proxy_no_cache|add_header X-Cache-Status|proxy_set_header Accept-Encoding)[^;]*;)",
                             flags=re.MULTILINE)


def _snippets() -> tuple[str, str]:
    http_snippet = k8s_object("ConfigMap", "ingress-nginx-controller")["data"]["http-snippet"]
    location_snippet = k8s_object("Ingress", "scalekit-shop")["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/configuration-snippet"]
    return http_snippet, location_snippet


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines() if line.split("#", 1)[0].strip())


def _map_blocks(text: str) -> dict[str, str]:
    """{variable: normalised body} of every ``map ... $variable { ... }`` block."""
    blocks = re.findall(r"map (\S+) (\$\w+) \{(.*?)\n\s*\}", _without_comments(text), flags=re.DOTALL)
    return {variable: f"{source} " + " ".join(body.split()) for source, variable, body in blocks}


def render(workdir: Path, *, listen_port: int, upstream_port: int) -> Path:
    http_snippet, location_snippet = _snippets()
    http_snippet = http_snippet.replace("/tmp/scalekit-edge-cache", str(workdir / "cache"))
    temp_paths = "".join(f"    {name}_temp_path {workdir}/{name}_temp;\n"
                         for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = f"""
{"user root;" if os.geteuid() == 0 else ""}
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
{temp_paths}
    access_log {workdir}/access.log;
{http_snippet}
    upstream upstream_balancer {{
        server 127.0.0.1:{upstream_port};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://upstream_balancer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
{location_snippet}
        }}
    }}
}}
"""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(config)
    return workdir / "nginx.conf"


def test_controller_maps_are_the_nginx_tier_maps() -> None:
    http_snippet, _ = _snippets()
    assert _map_blocks(http_snippet) == _map_blocks((NGINX_DIR / "nginx.conf").read_text())
    assert len(_map_blocks(http_snippet)) == 5


def test_ingress_cache_directives_are_the_nginx_tier_directives() -> None:
    _, location_snippet = _snippets()
    shipped = CACHE_DIRECTIVE.findall((NGINX_DIR / "scalekit.conf").read_text())
    assert CACHE_DIRECTIVE.findall(location_snippet) == shipped
    assert len(shipped) >= 12


def test_ingress_snippets_pass_nginx_t(tmp_path: Path) -> None:
    binary = require_binary("nginx")
    result = nginx_test(binary, render(tmp_path, listen_port=free_port(), upstream_port=8000))
    assert result.returncode == 0, result.stderr


@pytest.mark.server
def test_ingress_edge_cache_serves_hits_in_front_of_an_instance(tmp_path: Path) -> None:
    binary = require_binary("nginx")
    instance = AppInstance("pod", tmp_path)
    instance.start()
    try:
        port = free_port()
        config = render(tmp_path / "nginx", listen_port=port, upstream_port=instance.port)
        with run_nginx(binary, config, port) as url, httpx.Client(base_url=url, timeout=10) as client:
            page = f"/cacheable?v={uuid.uuid4().hex}"
            assert client.get(page).headers["x-cache-status"] == "MISS"
            assert client.get(page).headers["x-cache-status"] == "HIT"
            assert client.get(page + "&utm_source=x").headers["x-cache-status"] == "HIT"
            assert "HIT" not in {client.get("/private").headers["x-cache-status"] for _ in range(3)}
    finally:
        instance.stop()


def test_internal_paths_are_denied_to_everyone() -> None:
    internal = k8s_object("Ingress", "scalekit-shop-internal-paths")
    ranges = internal["metadata"]["annotations"]["nginx.ingress.kubernetes.io/denylist-source-range"].split(",")
    assert set(ranges) == {"0.0.0.0/0", "::/0"}
    paths = {(path["path"], path["pathType"]) for rule in internal["spec"]["rules"] for path in rule["http"]["paths"]}
    assert paths == {("/metrics", "Exact"), ("/_scalekit", "Prefix")}
    hosts = {rule["host"] for rule in k8s_object("Ingress", "scalekit-shop")["spec"]["rules"]}
    assert {rule["host"] for rule in internal["spec"]["rules"]} == hosts
    assert (K8S_DIR / "ingress.yaml").is_file()
