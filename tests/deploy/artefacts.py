"""Read the shipped deploy/ artefacts the way their consumers do (compose, Kubernetes, Prometheus,
prometheus-adapter, Grafana), for the tests that check them against each other and against
scalekit itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import yaml  # type: ignore[import-untyped]

from .harness import DEPLOY

COMPOSE_FILE = DEPLOY / "docker-compose.prod.yml"
K8S_DIR = DEPLOY / "k8s"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "rules" / "scalekit.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "scalekit.json"

# Values for the variables docker-compose.prod.yml requires (${VAR:?...}).
SAMPLE_SECRETS = {
    "SCALEKIT_ALLOWED_HOSTS": "shop.example.com",
    "POSTGRES_PASSWORD": "s3cret-password",
    "REDIS_PASSWORD": 'redis:p@ss "word"',
    "SCALEKIT_CACHE_INVALIDATION_PURGE_TOKEN": "purge-token-0123456789abcdef",
    "SCALEKIT_CACHE_L2_SIGNING_SECRET": "signing-secret-0123456789abcdef",
    "GRAFANA_ADMIN_PASSWORD": "admin-password",
}

# A metric name as written in PromQL; recording rules (job:scalekit_x:rate5m) are not metrics.
METRIC_NAME = re.compile(r"(?<![:\w])(scalekit_[a-zA-Z0-9_]+)(?![:\w])")
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_compose() -> dict[str, Any]:
    return cast(dict[str, Any], yaml.safe_load(COMPOSE_FILE.read_text()))


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, as `docker compose` does."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if environ.get(name):
            return environ[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"compose needs {name}: {arg}")
        return ""

    return _INTERPOLATION.sub(replace, value)


def compose_app_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The app service's environment after interpolation with ``environ``."""
    raw = load_compose()["services"]["app"]["environment"]
    return {key: interpolate(str(value), environ) for key, value in raw.items()}


# Objects of custom resources (kube-prometheus-stack's CRDs): kubernetes-validate has no schema
# for them, tests/deploy/test_k8s.py checks them structurally.
CUSTOM_API_GROUPS = ("monitoring.coreos.com/",)


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s (recursively), with the file it came from
    (kustomization.yaml files are kustomize's, not objects)."""
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def builtin_manifest_paths() -> list[Path]:
    """The manifest files whose objects all have built-in kinds (what kubernetes-validate knows)."""
    custom = {path for path, document in k8s_documents() if document["apiVersion"].startswith(CUSTOM_API_GROUPS)}
    return sorted({path for path, _ in k8s_documents()} - custom)


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    for _, document in k8s_documents():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise LookupError(f"no {kind} named {name} under {K8S_DIR}")


def adapter_rules() -> list[dict[str, Any]]:
    """prometheus-adapter's rules, from the ConfigMap it is installed with."""
    config_map = k8s_object("ConfigMap", "scalekit-prometheus-adapter")
    return cast(list[dict[str, Any]], yaml.safe_load(config_map["data"]["config.yaml"])["rules"])


def adapter_query(rule: dict[str, Any], *, label_matchers: str, group_by: str) -> str:
    """The PromQL prometheus-adapter sends for ``rule`` (its Go template, filled in)."""
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"])
    assert series is not None
    return (str(rule["metricsQuery"]).replace("<<.Series>>", series.group(1))
            .replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by))


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def recording_rule_names() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def dashboard() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(DASHBOARD_FILE.read_text()))


def dashboard_panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_expressions(*, concrete: bool = False) -> list[str]:
    """Every panel query; ``concrete`` replaces Grafana's variables so PromQL tools accept them."""
    expressions = [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]
    if concrete:
        expressions = [expr.replace("$__rate_interval", "1m").replace("$instance", ".*") for expr in expressions]
    return expressions


def metric_names(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC_NAME.findall(expr)}
