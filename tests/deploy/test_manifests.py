"""The compose file, the Kubernetes manifests and the Dockerfile: valid against their schemas
(offline), and wired to each other and to scalekit's configuration.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from scalekit.config import load_config
from tests.servers import REPO_ROOT

from .artefacts import (
    COMPOSE_FILE,
    K8S_DIR,
    PROMETHEUS_DIR,
    SAMPLE_SECRETS,
    adapter_rules,
    builtin_manifest_paths,
    compose_app_environment,
    k8s_documents,
    k8s_object,
    load_compose,
)
from .harness import DEPLOY

# Any attempt to reach the network goes to a closed port: the validators must work offline.
OFFLINE_ENV = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")


def _tool(name: str) -> list[str]:
    """The console script, or the module run by this interpreter (the pip package is installed)."""
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", name.replace("-", "_")]


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          check=False, capture_output=True, text=True, env=OFFLINE_ENV, timeout=60)


def kubernetes_validate(paths: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_tool("kubernetes-validate"), "--strict", "-k", version, *map(str, paths)],
                          check=False, capture_output=True, text=True, env=OFFLINE_ENV, timeout=60)


# --------------------------------------------------------------------------- compose


def test_compose_file_validates_against_the_compose_spec_offline() -> None:
    result = check_compose(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_compose_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = COMPOSE_FILE.read_text().replace("    deploy:\n      replicas: 3", "    deploy:\n      replica: 3", 1)
    assert broken != COMPOSE_FILE.read_text()
    (tmp_path / "broken.yml").write_text(broken)
    result = check_compose(tmp_path / "broken.yml")
    assert result.returncode != 0 and "replica" in result.stdout


def test_compose_app_environment_is_accepted_by_scalekit(tmp_path: Path) -> None:
    environment = compose_app_environment(SAMPLE_SECRETS)
    config = load_config(environ=environment, cwd=tmp_path)   # unknown or malformed keys raise
    database = config.pool.databases["default"]
    assert database.url == "postgresql://scalekit@postgres:5432/shop"   # the password is apart
    assert database.resolved_password() == SAMPLE_SECRETS["POSTGRES_PASSWORD"]
    assert (database.pool_size, database.max_overflow) == (4, 3)
    assert config.redis.url == "redis://redis:6379/0"
    assert config.cache.invalidation.purge_token == SAMPLE_SECRETS["SCALEKIT_CACHE_INVALIDATION_PURGE_TOKEN"]


@pytest.mark.parametrize("variable", ["POSTGRES_PASSWORD", "SCALEKIT_ALLOWED_HOSTS",
                                      "SCALEKIT_CACHE_INVALIDATION_PURGE_TOKEN", "SCALEKIT_CACHE_L2_SIGNING_SECRET"])
def test_compose_requires_its_secrets_and_the_sites_hosts(variable: str) -> None:
    with pytest.raises(KeyError, match=variable):
        compose_app_environment({k: v for k, v in SAMPLE_SECRETS.items() if k != variable})


def _k8s_app_environment(secrets_dir: Path) -> dict[str, str]:
    """The app container's environment, with the Secret's keys as sample values and its volume
    written into ``secrets_dir`` (the mount path adapted)."""
    environment = dict(k8s_object("ConfigMap", "scalekit-config")["data"])
    pod = k8s_object("Deployment", "scalekit-shop")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for variable in container["env"]:   # secrets get sample values
        environment[variable["name"]] = variable.get("value", "x" * 24)
    (volume,) = [volume for volume in pod["volumes"] if "secret" in volume]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for item in volume["secret"]["items"]:
        (secrets_dir / item["path"]).write_text(f"sample {item['key']} with @:/ characters\n")
    return {name: value.replace(mount["mountPath"], str(secrets_dir)) for name, value in environment.items()}


@pytest.mark.parametrize("fleet", ["compose", "kubernetes"])
def test_the_shipped_fleet_caches_pages_at_the_edge_and_in_the_app(fleet: str, tmp_path: Path) -> None:
    environment = (compose_app_environment(SAMPLE_SECRETS) if fleet == "compose"
                   else _k8s_app_environment(tmp_path / "secrets"))
    config = load_config(environ=environment, cwd=tmp_path)
    assert config.cdn.enabled and config.cdn.default_policy == "page"   # shared freshness on pages
    assert [(rule.path, rule.policy) for rule in config.cdn.rules] == [("/api/**", "api")]
    assert config.cache.enabled and "*" not in config.allowed_hosts    # the app's tiers, for its hosts


def test_compose_services_are_wired_together() -> None:
    compose = load_compose()
    services = compose["services"]
    app, nginx, redis, postgres = (services[name] for name in ("app", "nginx", "redis", "postgres"))
    networks = compose["networks"]

    # The app: replicas with limits, workers from the environment, healthchecked.
    assert app["deploy"]["replicas"] >= 2
    assert set(app["deploy"]["resources"]["limits"]) == {"cpus", "memory"}
    assert "WEB_CONCURRENCY" in app["environment"] and app["healthcheck"]["test"][-1] == "/app/deploy/healthcheck.py"
    # Only nginx may set X-Forwarded-For: its fixed address is the app's trusted proxy.
    nginx_ip = nginx["networks"]["backend"]["ipv4_address"]
    assert app["environment"]["FORWARDED_ALLOW_IPS"] == nginx_ip
    assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(networks["backend"]["ipam"]["config"][0]["subnet"])
    # Prometheus scrapes from the monitoring network, which the app admits; nginx is not on it.
    monitoring = networks["monitoring"]["ipam"]["config"][0]["subnet"]
    assert monitoring in app["environment"]["SCALEKIT_METRICS_ALLOW_FROM"].split(",")
    assert "monitoring" in app["networks"] and "monitoring" not in nginx["networks"]
    assert services["prometheus"]["networks"] == ["monitoring"]
    # Redis evicts entries only (volatile-lru), never the tag generations (test_secrets.py runs
    # its command); Postgres keeps data.
    assert "--maxmemory-policy volatile-lru" in redis["command"][-1] and "--maxmemory " in redis["command"][-1]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert any(arg.startswith("max_connections=") for arg in postgres["command"])
    for name in ("app", "nginx", "redis", "postgres"):
        assert "healthcheck" in services[name], name
    # Every service's log rotates (Docker's json-file grows without bound by default).
    for name, service in services.items():
        options = service["logging"]["options"]
        assert service["logging"]["driver"] == "json-file", name
        assert options["max-size"] and int(options["max-file"]) >= 2, name


def test_compose_edge_cache_sits_between_nginx_and_the_fleet_and_the_app_purges_it(tmp_path: Path) -> None:
    compose = load_compose()
    services, networks = compose["services"], compose["networks"]
    varnish, nginx = services["varnish"], services["nginx"]
    main = (DEPLOY / "nginx" / "nginx.conf").read_text()
    site = (DEPLOY / "nginx" / "scalekit.conf").read_text()
    vcl = (DEPLOY / "varnish" / "default.vcl").read_text()
    # nginx -> varnish:6081 -> nginx:8080 (admitting Varnish's address only) -> app:8000.
    assert re.search(r"^\s*server varnish:6081 [^;]*\bresolve;", main, flags=re.MULTILINE)
    assert "varnish" in nginx["depends_on"] and varnish["build"]["target"] == "edge-cache"
    assert '.host = "nginx";' in vcl and '.port = "8080";' in vcl and "listen 8080;" in site
    varnish_ip = varnish["networks"]["backend"]["ipv4_address"]
    assert f"allow {varnish_ip};" in site and "deny all;" in site
    assert "frontend" not in varnish["networks"] and "healthcheck" in varnish
    # The app purges it: tags as xkey, purges to the purge socket the image listens on, from the
    # backend network the VCL's acl admits.
    config = load_config(environ=compose_app_environment(SAMPLE_SECRETS), cwd=tmp_path)
    assert config.cdn.surrogate_keys == "varnish"
    (target,) = config.cdn.purge.targets.values()
    assert target.kind == "varnish" and target.urls == ("http://varnish:6091",)
    assert "-a purge=:6091" in _dockerfile() and "-a :6081" in _dockerfile()
    backend = ipaddress.ip_network(networks["backend"]["ipam"]["config"][0]["subnet"])
    acl = [ipaddress.ip_network(f"{address}/{bits}") for address, bits in
           re.findall(r'^\s*"([0-9.]+)"/(\d+);', vcl, flags=re.MULTILINE)]
    assert any(backend.subnet_of(network) for network in acl)


def test_compose_mounts_and_builds_files_that_exist() -> None:
    compose = load_compose()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, volume)


def test_prometheus_scrapes_every_app_replica_by_dns() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "scalekit")
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["app"] and discovery["type"] == "A"
    bind_port = int(compose_app_environment(SAMPLE_SECRETS).get("BIND", "0.0.0.0:8000").rsplit(":", 1)[1])
    assert discovery["port"] == bind_port


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_k8s_manifests_validate_strictly_offline(version: str) -> None:
    paths = builtin_manifest_paths()
    result = kubernetes_validate(paths, version)
    assert result.returncode == 0, result.stdout + result.stderr
    validated = {line.split()[1] for line in result.stdout.splitlines() if " passed " in line}
    assert len(validated) == len(paths)


def test_k8s_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    broken = (K8S_DIR / "hpa.yaml").read_text().replace("  minReplicas: 3", "  minReplicas: 3\n  minReplica: 3")
    (tmp_path / "hpa.yaml").write_text(broken)
    result = kubernetes_validate([tmp_path / "hpa.yaml"], KUBERNETES_VERSIONS[-1])
    assert result.returncode != 0 and "minReplica" in result.stdout + result.stderr


def test_k8s_objects_reference_each_other() -> None:
    deployment = k8s_object("Deployment", "scalekit-shop")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = k8s_object("Service", "scalekit-shop")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert k8s_object("PodDisruptionBudget",
        "scalekit-shop")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = k8s_object("HorizontalPodAutoscaler", "scalekit-shop")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scalekit-shop"}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    services = {name: k8s_object("Service", name) for name in ("scalekit-shop", "scalekit-edge-cache")}
    for _, document in k8s_documents():
        if document["kind"] == "Ingress":
            for rule in document["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    ports = services[backend["name"]]["spec"]["ports"]
                    assert backend["port"]["name"] in {port["name"] for port in ports}
    # The site goes through the edge cache (Varnish), which fetches from the app's Service.
    (site,) = k8s_object("Ingress", "scalekit-shop")["spec"]["rules"]
    assert {path["backend"]["service"]["name"] for path in site["http"]["paths"]} == {"scalekit-edge-cache"}
    edge = k8s_object("Deployment", "scalekit-edge-cache")["spec"]["template"]
    (varnish,) = edge["spec"]["containers"]
    edge_ports = {port["name"] for port in varnish["ports"]}
    for name in ("scalekit-edge-cache", "scalekit-edge-cache-purge"):
        edge_service = k8s_object("Service", name)["spec"]
        assert edge_service["selector"].items() <= edge["metadata"]["labels"].items()
        assert {port["targetPort"] for port in edge_service["ports"]} <= edge_ports
    assert k8s_object("Service", "scalekit-edge-cache-purge")["spec"]["clusterIP"] == "None"   # every pod
    (vcl_volume,) = [volume for volume in edge["spec"]["volumes"] if "configMap" in volume]
    vcl = k8s_object("ConfigMap", vcl_volume["configMap"]["name"])["data"]["default.vcl"]
    port = services["scalekit-shop"]["spec"]["ports"][0]["port"]
    assert '.host = "scalekit-shop";' in vcl and f'.port = "{port}";' in vcl
    assert "-a" in varnish["command"] and "purge=:6091" in varnish["command"]
    purge_url = k8s_object("ConfigMap", "scalekit-config")["data"]["SCALEKIT_CDN_PURGE_TARGETS_EDGE_URLS"]
    assert purge_url == "http://scalekit-edge-cache-purge:6091"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {ref["configMapRef"]["name"] for ref in container["envFrom"]} == {"scalekit-config"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]


def test_k8s_hpa_scales_on_cpu_and_a_scalekit_pod_metric_with_behaviour() -> None:
    spec = k8s_object("HorizontalPodAutoscaler", "scalekit-shop")["spec"]
    kinds = {metric["type"]: metric for metric in spec["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    pods_metric = kinds["Pods"]["pods"]["metric"]["name"]
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert pods_metric in served, "the HPA's metric must be one prometheus-adapter serves"
    assert spec["behavior"]["scaleUp"]["policies"] and spec["behavior"]["scaleDown"]["policies"]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert spec["minReplicas"] >= 2 and spec["maxReplicas"] > spec["minReplicas"]


def test_k8s_pods_drain_before_they_stop() -> None:
    pod = k8s_object("Deployment", "scalekit-shop")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = k8s_object("ConfigMap", "scalekit-config")["data"]
    pre_stop_seconds = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop_seconds + int(config["GRACEFUL_TIMEOUT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in container
    assert container["readinessProbe"]["exec"]["command"][-1] == "/app/deploy/healthcheck.py"
    assert {"requests", "limits"} <= set(container["resources"])


def test_k8s_configuration_is_accepted_by_scalekit(tmp_path: Path) -> None:
    environment = _k8s_app_environment(tmp_path / "secrets")
    config = load_config(environ=environment, cwd=tmp_path)
    # The passwords come from the Secret's files, apart from the URLs.
    assert config.pool.databases["default"].resolved_password() == "sample database-password with @:/ characters"
    assert config.redis.resolved_password() == "sample redis-password with @:/ characters"
    assert config.pool.databases["default"].pool_size == int(environment["SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZE"])


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_copies_files_that_exist_and_runs_the_shipped_server_settings() -> None:
    text = _dockerfile()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            # examples/ is written by another engineer; everything else must exist now.
            assert (REPO_ROOT / source).exists() or source == "examples", source
    assert re.search(r"^ARG APP_MODULE=examples\.flask_shop\.app:app$", text, flags=re.MULTILINE)
    assert 'CMD ["gunicorn", "-c", "/app/deploy/gunicorn.conf.py"]' in text
    assert "/app/deploy/healthcheck.py" in text
    assert "COPY deploy/nginx/nginx.conf /etc/nginx/nginx.conf" in text
    # The edge image's nginx takes "resolve" on upstream servers (1.27.3 or newer).
    version = re.search(r"^ARG NGINX_VERSION=(\d+)\.(\d+)(?:\.(\d+))?$", text, flags=re.MULTILINE)
    assert version is not None and tuple(int(part or 0) for part in version.groups()) >= (1, 27, 3)
    assert "FROM nginx:${NGINX_VERSION} AS edge" in text
    assert "COPY deploy/nginx/scalekit.conf /etc/nginx/conf.d/scalekit.conf" in text
    # The edge cache: Debian's Varnish and vmod_xkey (the ones the tests run), the shipped VCL.
    assert "FROM debian:bookworm-slim AS edge-cache" in text and "varnish varnish-modules" in text
    assert "COPY deploy/varnish/default.vcl /etc/varnish/default.vcl" in text
    # The image's state and metrics directories are the ones compose and Kubernetes mount.
    assert "PROMETHEUS_MULTIPROC_DIR=/tmp/scalekit-metrics" in text
    assert k8s_object("ConfigMap", "scalekit-config")["data"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/scalekit-metrics"


def test_dockerignore_keeps_what_the_image_needs() -> None:
    ignored = {line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("scalekit", "adapters", "examples", "pyproject.toml", "README.md", "deploy/nginx",
                   "deploy/gunicorn.conf.py", "deploy/healthcheck.py", "deploy/varnish"):
        assert needed not in ignored
