"""Prometheus config and rules through Debian's promtool (check + unit tests), and the Grafana
provisioning and dashboard: every query parses as PromQL and the wiring matches compose.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from .artefacts import (
    DASHBOARD_FILE,
    PROMETHEUS_DIR,
    RULES_FILE,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    load_compose,
)
from .conftest import require_binary
from .harness import DEPLOY

GRAFANA_DIR = DEPLOY / "grafana"
RUNBOOK = DEPLOY / "RUNBOOK.md"
# Where the rules say the runbook is served (a placeholder the operator replaces with their
# repository's URL for deploy/RUNBOOK.md; the README says so).
RUNBOOK_URL = "https://git.example.com/your-team/scalekit/blob/main/deploy/RUNBOOK.md"


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub and GitLab give the headings of ``markdown``."""
    headings = re.findall(r"^#{1,6} (.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], check=False, capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_compose_prometheus_config_passes_promtool() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_kubernetes_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # Debian builds Prometheus without Kubernetes service discovery, so its promtool rejects
    # kubernetes_sd_configs; everything else (relabelling included) is checked on a copy that
    # discovers the same targets from a file. test_autoscaling_signal.py runs that copy.
    text = (PROMETHEUS_DIR / "prometheus-kubernetes.yml").read_text()
    copy = re.sub(r"kubernetes_sd_configs:\n(?:\s+- role: pod\n)(?:\s{8,}.*\n)+",
                  "file_sd_configs:\n      - files: [targets.json]\n", text)
    assert "kubernetes_sd_configs" not in copy
    (tmp_path / "rules").symlink_to(PROMETHEUS_DIR / "rules")
    (tmp_path / "prometheus.yml").write_text(copy)
    (tmp_path / "targets.json").write_text("[]")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES_FILE.relative_to(PROMETHEUS_DIR)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "tests/scalekit_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_the_issue_asks_for_exists_and_is_unit_tested() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert {"ScalekitHighLatencyP99", "ScalekitPoolSaturated", "ScalekitCacheHitRatioCollapse",
            "ScalekitRedisDown", "ScalekitHighErrorRatio", "ScalekitFleetDown", "ScalekitFleetAbsent"} <= alerts
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "scalekit_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert tested == alerts, "every alert has a unit test in which it fires"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as the expression of a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": expr}
        for index, expr in enumerate(dashboard_expressions(concrete=True))]}]}
    (tmp_path / "dashboard-queries.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(tmp_path / "dashboard-queries.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    titles = " | ".join(panel["title"].lower() for panel in dashboard_panels())
    for topic in ("request rate", "latency percentiles", "hit ratio by tier", "pool saturation", "invalidations"):
        assert topic in titles, topic
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "scalekit.yml").read_text())
    (provided,) = provider["providers"]
    grafana = load_compose()["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 2)[:2] if volume.count(":") == 2 else volume.split(":", 1)
                  for volume in grafana["volumes"])
    assert (DEPLOY / "grafana" / "dashboards").samefile(DEPLOY / next(
        source for source, target in mounts.items() if target == provided["options"]["path"]))
    assert DASHBOARD_FILE.parent.name == "dashboards"


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-kubernetes.yml"])
def test_prometheus_configs_load_the_shipped_rules(name: str) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    assert config["rule_files"] == ["rules/*.yml"]


def test_every_alert_links_its_own_runbook_section() -> None:
    text = RUNBOOK.read_text()
    anchors = _anchors(text)
    linked = set()
    for rule in _alert_rules():
        url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url == RUNBOOK_URL and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"deploy/RUNBOOK.md has no section for {rule['alert']}"
        linked.add(anchor)
    sections = set(re.findall(r"^## (Scalekit\w+)$", text, flags=re.MULTILINE))
    assert {name.lower() for name in sections} == linked, "a runbook section for every alert, and only those"
    for target in re.findall(r"\]\(#([^)]+)\)", text):   # the runbook's own cross-references
        assert target in anchors, target


def test_alerts_are_per_namespace_and_job() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    expressions = [rule["expr"] for group in groups for rule in group["rules"]]
    for grouping in re.findall(r"\b(?:sum|max|min|avg|count) by \(([^)]*)\)", " ".join(expressions)):
        labels = {label.strip() for label in grouping.split(",")}
        assert {"namespace", "job"} <= labels, grouping
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule:
                assert rule["record"].startswith("namespace_job"), rule["record"]
            else:
                assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
