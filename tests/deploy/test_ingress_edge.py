"""The ingress-nginx edge (deploy/k8s/ingress.yaml + ingress-nginx/controller-configmap.yaml) is
the same as deploy/nginx/'s front, and really works: its location-snippet, dropped into an nginx
config the way the controller places it (inside each location, after the headers the
controller's own template sets), passes ``nginx -t`` and, in front of the shipped edge cache
(Varnish with the Kubernetes VCL, deploy/k8s/edge-cache-vcl.yaml) in front of a real instance,
caches and keeps a client's forwarded headers from the app.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.edge.varnish import running_varnish
from tests.servers import free_port

from .artefacts import K8S_DIR, k8s_object
from .conftest import require_binary
from .harness import NGINX_DIR, AppInstance, nginx_test, run_nginx
from .test_forwarded import POISON

pytestmark = [pytest.mark.nginx]

EDGE_DIRECTIVE = re.compile(
    r"^\s*((?:proxy_cache\w*|proxy_no_cache|proxy_hide_header|proxy_pass_header|add_header|proxy_set_header)\b[^;]*;)",
    flags=re.MULTILINE)
# What ingress-nginx's own location template sends the app with use-forwarded-headers "false"
# (its nginx.tmpl): the controller's values, so the snippet must not set them a second time.
CONTROLLER_SETS = ("Host", "Connection", "Upgrade", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Host",
    "X-Forwarded-Port",
                   "X-Forwarded-Proto", "X-Forwarded-Scheme", "X-Scheme")
# The template's maps for use-forwarded-headers "false": nothing taken from the client.
CONTROLLER_MAPS = """
    map '' $pass_access_scheme { default $scheme; }
    map '' $pass_server_port { default $server_port; }
    map $http_host $best_http_host { default $http_host; '' $host; }
    map '' $pass_port { default $pass_server_port; }
    map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
"""
CONTROLLER_HEADERS = """
            proxy_set_header Host $best_http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $best_http_host;
            proxy_set_header X-Forwarded-Port $pass_port;
            proxy_set_header X-Forwarded-Proto $pass_access_scheme;
            proxy_set_header X-Forwarded-Scheme $pass_access_scheme;
            proxy_set_header X-Scheme $pass_access_scheme;
"""


def _controller() -> dict[str, str]:
    return dict(k8s_object("ConfigMap", "ingress-nginx-controller")["data"])


def _location_snippet() -> str:
    return _controller()["location-snippet"]


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines() if line.split("#", 1)[0].strip())


def _edge_directives(text: str) -> list[str]:
    """The edge's directives of a location, less those the controller's template sets itself."""
    return [directive for directive in EDGE_DIRECTIVE.findall(_without_comments(text))
            if not any(directive.startswith(f"proxy_set_header {name} ") for name in CONTROLLER_SETS)]


def render(workdir: Path, *, listen_port: int, upstream_port: int) -> Path:
    location_snippet = _location_snippet()
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
{CONTROLLER_MAPS}
    upstream upstream_balancer {{
        server 127.0.0.1:{upstream_port};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://upstream_balancer;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
{CONTROLLER_HEADERS}
{location_snippet}
        }}
    }}
}}
"""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(config)
    return workdir / "nginx.conf"


def test_the_controller_keeps_no_cache_of_its_own() -> None:
    # One edge cache, the purgeable one: Varnish (edge-cache.yaml), whose key has the scheme the
    # controller sends (X-Forwarded-Proto from $pass_access_scheme) and the Host.
    controller = _controller()
    assert "http-snippet" not in controller and "proxy_cache" not in controller["location-snippet"]
    assert "proxy_set_header X-Forwarded-Proto $pass_access_scheme;" in CONTROLLER_HEADERS
    vcl = k8s_object("ConfigMap", "scalekit-edge-cache-vcl")["data"]["default.vcl"]
    assert "hash_data(req.http.X-Forwarded-Proto);" in vcl and "hash_data(req.http.host);" in vcl


def test_ingress_edge_directives_are_the_nginx_tier_directives() -> None:
    location = (NGINX_DIR / "scalekit.conf").read_text()
    location = location[location.index("location / {"):location.index("# -------", location.index("location / {"))]
    assert sorted(_edge_directives(_location_snippet())) == sorted(_edge_directives(location))
    assert len(_edge_directives(_location_snippet())) >= 12


def test_no_forwarded_header_is_trusted_and_no_snippet_annotation_is_allowed() -> None:
    controller = _controller()
    assert controller["use-forwarded-headers"] == "false"
    assert controller["enable-real-ip"] == "false" or "0.0.0.0/0" not in controller.get("proxy-real-ip-cidr",
        "0.0.0.0/0")
    assert controller["allow-snippet-annotations"] == "false"
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        assert "-snippet:" not in path.read_text().replace("http-snippet:", "").replace("location-snippet:", ""), path


def test_ingress_snippets_pass_nginx_t(tmp_path: Path) -> None:
    binary = require_binary("nginx")
    result = nginx_test(binary, render(tmp_path, listen_port=free_port(), upstream_port=8000))
    assert result.returncode == 0, result.stderr


@pytest.mark.server
def test_ingress_edge_caches_and_keeps_forwarded_headers_from_the_app(tmp_path: Path) -> None:
    binary = require_binary("nginx")
    instance = AppInstance("pod", tmp_path)
    instance.start()
    vcl = k8s_object("ConfigMap", "scalekit-edge-cache-vcl")["data"]["default.vcl"]
    vcl = vcl.replace('.host = "scalekit-shop";', '.host = "127.0.0.1";').replace(
        '.port = "80";', f'.port = "{instance.port}";')
    try:
        port = free_port()
        with running_varnish(instance.port, vcl_text=vcl) as cache:
            config = render(tmp_path / "nginx", listen_port=port, upstream_port=cache.port)
            with run_nginx(binary, config, port) as url, httpx.Client(base_url=url, timeout=10) as client:
                page = f"/cacheable?v={uuid.uuid4().hex}"
                first = client.get(page)
                assert first.headers["x-cache-status"] == "MISS" and first.headers["age"] == "0"
                hit = client.get(page)
                assert hit.headers["x-cache-status"] == "HIT" and "x-varnish" not in hit.headers
                assert client.get(page + "&utm_source=x").headers["x-cache-status"] == "HIT"
                assert "HIT" not in {client.get("/private").headers["x-cache-status"] for _ in range(3)}
                links = f"/links?v={uuid.uuid4().hex}"
                poisoned = client.get(links, headers={"Host": "shop.test", **POISON})
                assert poisoned.text == f"http://shop.test:{port}/links\n"   # the controller's own port
                assert client.get(links, headers={"Host": "shop.test"}).headers["x-cache-status"] == "HIT"
                seen = client.get("/whoami", headers={"Host": "shop.test", **POISON}).json()["headers"]
                assert not {"forwarded", "x-forwarded-prefix", "x-forwarded-ssl", "x-original-url"} & set(seen)
                assert seen["x-forwarded-host"] == "shop.test" and seen["x-forwarded-proto"] == "http"
                assert seen["x-forwarded-for"] == "127.0.0.1"   # one address: the controller's word
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


def _configmap_cache_settings(host: str) -> dict[str, str]:
    """The ConfigMap's settings of the app's own cache, its host names replaced by ``host``."""
    data = k8s_object("ConfigMap", "scalekit-config")["data"]
    settings = {name: str(value) for name, value in data.items() if name.startswith("SCALEKIT_CACHE_")}
    assert data["SCALEKIT_ALLOWED_HOSTS"] == "shop.example.com"
    return {**settings, "SCALEKIT_ALLOWED_HOSTS": host, "SCALEKIT_CACHE_DISK_MAX_BYTES": "0"}


@pytest.mark.server
def test_behind_the_ingress_edge_the_app_stores_and_serves_pages_itself(tmp_path: Path) -> None:
    # ingress-nginx always sends X-Forwarded-Port (its own port, which a Host such as
    # "shop.example.com" does not restate): unless the ConfigMap keys it, the app's tiers step
    # aside for every request that came through the edge, and only Varnish caches.
    binary = require_binary("nginx")
    instance = AppInstance("pod", tmp_path, env=_configmap_cache_settings("shop.test"))
    instance.start()
    vcl = k8s_object("ConfigMap", "scalekit-edge-cache-vcl")["data"]["default.vcl"]
    vcl = vcl.replace('.host = "scalekit-shop";', '.host = "127.0.0.1";').replace(
        '.port = "80";', f'.port = "{instance.port}";')
    try:
        port = free_port()
        with running_varnish(instance.port, vcl_text=vcl) as cache:
            config = render(tmp_path / "nginx", listen_port=port, upstream_port=cache.port)
            with run_nginx(binary, config, port) as url, \
                    httpx.Client(base_url=url, headers={"Host": "shop.test"}, timeout=10) as client:
                page = f"/cacheable?v={uuid.uuid4().hex}"
                first = client.get(page)
                assert first.headers["x-cache-status"] == "MISS"
                assert "stored" in first.headers["cache-status"], first.headers["cache-status"]
                # A logged-in client passes the edge (the VCL's credentials rule) and gets the
                # page from the app's own tiers.
                passed = client.get(page, headers={"Cookie": "session=alice"})
                assert passed.headers["x-cache-status"] == "BYPASS"
                assert "hit" in passed.headers["cache-status"], passed.headers["cache-status"]
                assert passed.text == first.text
    finally:
        instance.stop()
