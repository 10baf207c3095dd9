"""The Kubernetes quick-start, complete: one kustomization applies every manifest with the
namespaces first; pods carry no API token; NetworkPolicies let only the app reach Redis and
Postgres, only ingress-nginx reach the edge cache's traffic port and only the app its purge
port, and only the edge cache and Prometheus reach the app; Redis requires its password as the
compose one does; the edge cache's VCL is the shipped one; and kube-prometheus-stack gets a
ServiceMonitor, the alert rules and the dashboard as objects generated from the files they
mirror. (kubernetes-validate checks the
built-in kinds in test_manifests.py; the custom resources are checked here, structurally and
with promtool.)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from scalekit.secrets import url_has_password

from .artefacts import DASHBOARD_FILE, K8S_DIR, RULES_FILE, k8s_documents, k8s_object
from .harness import shipped_redis_script
from .test_prometheus import promtool

MONITORING_DIR = K8S_DIR / "monitoring"
APP = {"app.kubernetes.io/name": "scalekit-shop", "app.kubernetes.io/part-of": "scalekit"}
REDIS = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/part-of": "scalekit"}
POSTGRES = {"app.kubernetes.io/name": "postgres"}
INGRESS_NGINX = {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
EDGE_CACHE = {"app.kubernetes.io/name": "scalekit-edge-cache", "app.kubernetes.io/part-of": "scalekit"}


def kustomization(directory: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((directory / "kustomization.yaml").read_text()))


# --------------------------------------------------------------------------- one apply, in order


@pytest.mark.parametrize("directory", [K8S_DIR, MONITORING_DIR], ids=["app", "monitoring"])
def test_each_kustomization_applies_every_manifest_of_its_folder(directory: Path) -> None:
    listed = kustomization(directory)["resources"]
    present = sorted(path.name for path in directory.glob("*.yaml") if path.name != "kustomization.yaml")
    assert sorted(listed) == present


def test_namespaces_exist_before_what_lives_in_them() -> None:
    app = kustomization(K8S_DIR)
    # kustomize's default order puts Namespaces first (a "sortOptions: fifo" would keep the list's).
    assert "sortOptions" not in app and app["resources"][0] == "namespace.yaml"
    created = {document["metadata"]["name"] for path, document in k8s_documents()
               if path.name in app["resources"] and document["kind"] == "Namespace"}
    used = {document["metadata"].get("namespace") for path, document in k8s_documents()
            if path.name in app["resources"] and document["kind"] != "Namespace"}
    assert used <= created and {"scalekit", "monitoring"} <= created


@pytest.mark.parametrize("deployment, position", [("scalekit-shop", 0), ("scalekit-edge-cache", 1)])
def test_the_image_to_build_and_push_is_the_one_the_deployment_runs(deployment: str, position: int) -> None:
    image = kustomization(K8S_DIR)["images"][position]
    (container,) = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert container["image"].rsplit(":", 1)[0] == image["name"]
    assert image["newName"] and image["newTag"]


# --------------------------------------------------------------------------- identities, secrets


@pytest.mark.parametrize("name", ["scalekit-shop", "redis", "scalekit-edge-cache"])
def test_pods_run_as_their_own_service_account_without_an_api_token(name: str) -> None:
    pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
    account = k8s_object("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container["env"]}


def test_redis_requires_the_password_the_app_reads_from_its_secret_file() -> None:
    (redis,) = k8s_object("Deployment", "redis")["spec"]["template"]["spec"]["containers"]
    assert redis["command"][:2] == ["sh", "-c"] and redis["command"][2] == shipped_redis_script()
    secret = {"secretKeyRef": {"name": "scalekit-secrets", "key": "redis-password"}}
    assert _env(redis)["REDIS_PASSWORD"] == _env(redis)["REDISCLI_AUTH"] == secret
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]   # REDISCLI_AUTH
    pod = k8s_object("Deployment", "scalekit-shop")["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == "secrets"]
    (mount,) = [mount for mount in app["volumeMounts"] if mount["name"] == "secrets"]
    files = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
    config = k8s_object("ConfigMap", "scalekit-config")["data"]
    assert files[config["SCALEKIT_REDIS_PASSWORD_FILE"]] == "redis-password"
    assert files[config["SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD_FILE"]] == "database-password"
    assert not url_has_password(config["SCALEKIT_POOL_DATABASES_DEFAULT_URL"])   # the user only
    assert volume["secret"]["secretName"] == "scalekit-secrets" and volume["secret"]["defaultMode"] == 0o440


# --------------------------------------------------------------------------- NetworkPolicy


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels is evaluated here"
    return dict(selector.get("matchLabels", {})).items() <= labels.items()


def _peer_matches(peer: dict[str, Any], policy_namespace: str, namespace: str, labels: dict[str, str]) -> bool:
    if "namespaceSelector" in peer:
        namespace_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        namespace_ok = namespace == policy_namespace
    return namespace_ok and _selects(peer.get("podSelector", {}), labels)


def _port_matches(rule_port: dict[str, Any], port: int, port_names: dict[str, int]) -> bool:
    wanted = rule_port["port"]
    return (port_names.get(wanted) if isinstance(wanted, str) else wanted) == port


def admitted(target: dict[str, str], port: int, *, namespace: str, labels: dict[str, str],
             port_names: dict[str, int]) -> bool:
    """Whether the shipped policies let a pod (``namespace``, ``labels``) connect to a pod of the
    scalekit namespace labelled ``target`` on ``port`` (Kubernetes' NetworkPolicy semantics:
    a pod selected by any Ingress policy admits only what one of their rules allows)."""
    policies = [document for _, document in k8s_documents() if document["kind"] == "NetworkPolicy"
                and document["metadata"]["namespace"] == "scalekit"
                and "Ingress" in document["spec"]["policyTypes"]
                and _selects(document["spec"]["podSelector"], target)]
    if not policies:
        return True
    return any(
        (not rule.get("ports") or any(_port_matches(p, port, port_names) for p in rule["ports"]))
        and (not rule.get("from") or any(_peer_matches(peer, "scalekit", namespace, labels) for peer in rule["from"]))
        for policy in policies for rule in policy["spec"].get("ingress", []))


def _container_ports(name: str) -> dict[str, int]:
    (container,) = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize("source_namespace, source, expected", [
    pytest.param("scalekit", APP, True, id="the app"),
    pytest.param("scalekit", {"app.kubernetes.io/name": "debug-shell"}, False, id="another pod of the namespace"),
    pytest.param("ingress-nginx", INGRESS_NGINX, False, id="ingress-nginx"),
    pytest.param("default", APP, False, id="a pod labelled like the app, elsewhere"),
])
def test_only_the_app_reaches_redis_and_postgres(source_namespace: str, source: dict[str, str], expected: bool) -> None:
    kwargs = {"namespace": source_namespace, "labels": source}
    assert admitted(REDIS, _container_ports("redis")["redis"], port_names=_container_ports("redis"),
        **kwargs) is expected
    assert admitted(POSTGRES, 5432, port_names={}, **kwargs) is expected


@pytest.mark.parametrize("source_namespace, source, expected", [
    pytest.param("scalekit", EDGE_CACHE, True, id="the edge cache"),
    pytest.param("monitoring", PROMETHEUS, True, id="prometheus"),
    pytest.param("ingress-nginx", INGRESS_NGINX, False, id="ingress-nginx: through the edge cache only"),
    pytest.param("scalekit", REDIS, False, id="redis"),
    pytest.param("default", EDGE_CACHE, False, id="a pod labelled like the edge cache, elsewhere"),
])
def test_only_the_edge_cache_and_prometheus_reach_the_app(source_namespace: str, source: dict[str, str],
                                                          expected: bool) -> None:
    # This is what makes FORWARDED_ALLOW_IPS (the pod network) safe: no other pod can connect
    # and claim a client address or scheme; the edge cache passes on ingress-nginx's word.
    ports = _container_ports("scalekit-shop")
    assert admitted(APP, ports["http"], namespace=source_namespace, labels=source, port_names=ports) is expected
    assert k8s_object("ConfigMap", "scalekit-config")["data"]["FORWARDED_ALLOW_IPS"] != "*"


@pytest.mark.parametrize("source_namespace, source, port, expected", [
    pytest.param("ingress-nginx", INGRESS_NGINX, "http", True, id="ingress-nginx sends traffic"),
    pytest.param("ingress-nginx", INGRESS_NGINX, "purge", False, id="ingress-nginx cannot purge"),
    pytest.param("scalekit", APP, "purge", True, id="the app purges"),
    pytest.param("scalekit", APP, "http", False, id="the app sends no traffic"),
    pytest.param("scalekit", REDIS, "purge", False, id="redis"),
    pytest.param("default", APP, "purge", False, id="a pod labelled like the app, elsewhere"),
])
def test_only_ingress_nginx_sends_the_edge_cache_traffic_and_only_the_app_purges_it(
        source_namespace: str, source: dict[str, str], port: str, expected: bool) -> None:
    ports = _container_ports("scalekit-edge-cache")
    assert admitted(EDGE_CACHE, ports[port], namespace=source_namespace, labels=source, port_names=ports) is expected


def test_the_edge_caches_vcl_is_the_shipped_one() -> None:
    spec = importlib.util.spec_from_file_location("varnish_k8s", K8S_DIR.parent / "varnish" / "k8s.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.OUTPUT.read_text() == generator.configmap(), "stale: run python deploy/varnish/k8s.py"
    vcl = k8s_object("ConfigMap", "scalekit-edge-cache-vcl")["data"]["default.vcl"]
    assert vcl == generator.kubernetes_vcl()


def test_every_other_pod_of_the_namespace_admits_nobody() -> None:
    assert not admitted({"app.kubernetes.io/name": "anything"}, 80, namespace="scalekit", labels=APP, port_names={})


# --------------------------------------------------------------------------- kube-prometheus-stack


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_monitoring", MONITORING_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rules_and_dashboard_objects_are_generated_from_their_sources() -> None:
    for path, text in _generator().outputs().items():
        assert path.read_text() == text, f"{path.name} is stale: run python deploy/k8s/monitoring/generate.py"
    rule = k8s_object("PrometheusRule", "scalekit")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]
    board = k8s_object("ConfigMap", "scalekit-dashboard")
    assert json.loads(board["data"]["scalekit.json"]) == json.loads(DASHBOARD_FILE.read_text())
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"   # the chart's Grafana sidecar


def test_the_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rule = k8s_object("PrometheusRule", "scalekit")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_service_monitor_scrapes_every_app_pod_as_job_scalekit() -> None:
    monitor = k8s_object("ServiceMonitor", "scalekit-shop")
    service = k8s_object("Service", "scalekit-shop")
    spec = monitor["spec"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(spec) <= {"jobLabel", "selector", "endpoints", "namespaceSelector", "targetLabels", "podTargetLabels"}
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert _selects(spec["selector"], service["metadata"]["labels"])
    # job="scalekit", as the compose fleet's and the rules' tests use.
    assert service["metadata"]["labels"][spec["jobLabel"]] == "scalekit"
    (endpoint,) = spec["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings", "metricRelabelings"}
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    annotations = k8s_object("Deployment", "scalekit-shop")["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"]
    rule_labels = k8s_object("PrometheusRule", "scalekit")["metadata"]["labels"]
    assert monitor["metadata"]["labels"]["release"] == rule_labels["release"]
