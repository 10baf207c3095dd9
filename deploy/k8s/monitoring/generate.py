"""Write this folder's copies of the alert rules and the dashboard, for kube-prometheus-stack.

    python deploy/k8s/monitoring/generate.py

- prometheus-rule.yaml: deploy/prometheus/rules/scalekit.yml as a PrometheusRule, which the
  Prometheus Operator loads (the rules file stays the source: promtool tests it).
- grafana-dashboard.yaml: deploy/grafana/dashboards/scalekit.json as a ConfigMap that the
  chart's Grafana sidecar loads (label grafana_dashboard: "1").

Run it after changing either source; tests/deploy/test_k8s_monitoring.py fails until then.
Needs PyYAML.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent.parent
RULES = DEPLOY / "prometheus" / "rules" / "scalekit.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "scalekit.json"
# kube-prometheus-stack's Prometheus and Grafana pick up objects carrying these labels (the
# release label is the chart's default release name: put yours).
RELEASE = {"release": "kube-prometheus-stack"}
PART_OF = {"app.kubernetes.io/part-of": "scalekit"}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the generated files read like the sources."""


def _string(dumper: yaml.SafeDumper, value: str) -> Any:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def prometheus_rule() -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "scalekit", "namespace": "scalekit", "labels": {**PART_OF, **RELEASE}},
        "spec": {"groups": groups},
    }


def dashboard_config_map() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "scalekit-dashboard", "namespace": "monitoring",
                     "labels": {**PART_OF, "grafana_dashboard": "1"}},
        "data": {"scalekit.json": DASHBOARD.read_text()},
    }


def render(document: dict[str, Any], source: Path) -> str:
    header = (f"# Generated from {source.relative_to(DEPLOY.parent)} by deploy/k8s/monitoring/generate.py:"
              " edit the source, then run it.\n")
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


def outputs() -> dict[Path, str]:
    return {HERE / "prometheus-rule.yaml": render(prometheus_rule(), RULES),
            HERE / "grafana-dashboard.yaml": render(dashboard_config_map(), DASHBOARD)}


def main() -> int:
    for path, text in outputs().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
