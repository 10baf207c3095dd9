"""The HPA's custom metric rises above its target under load and falls back when load stops.

Everything the signal passes through is the shipped configuration, run for real on loopback:
the app under deploy/gunicorn.conf.py with the ConfigMap's workers and threads (in-flight
requests summed over the workers by prometheus_client's multiprocess mode); a real Prometheus
(Debian package) running the scrape job of deploy/prometheus/prometheus-kubernetes.yml, whose
relabelling gives the series the namespace and pod labels prometheus-adapter needs (targets come
from a file carrying the same __meta_kubernetes_* labels, since Debian's Prometheus has no
Kubernetes discovery); and the exact PromQL prometheus-adapter builds from the shipped rule,
compared with the HPA's target. The load is bounded: a fixed number of client threads on
loopback for at most a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import pytest

from tests.servers import free_port, stop_process_group, wait_for_port

from .artefacts import (
    PROMETHEUS_DIR,
    adapter_query,
    adapter_rules,
    dashboard_expressions,
    k8s_object,
)
from .conftest import require_binary
from .harness import AppInstance

pytestmark = [pytest.mark.server, pytest.mark.slow]

NAMESPACE = "scalekit"
POD = "scalekit-shop-7d9f8c6b5-x2x4q"
DEADLINE_SECONDS = 30.0
MAX_LOAD_SECONDS = 20.0


def prometheus_config(workdir: Path, app_port: int) -> Path:
    """The shipped Kubernetes scrape config, discovering one pod from a file, scraping every second."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = (PROMETHEUS_DIR / "prometheus-kubernetes.yml").read_text()
    text = re.sub(r"kubernetes_sd_configs:\n(?:\s+- role: pod\n)(?:\s{8,}.*\n)+",
                  "file_sd_configs:\n      - files: [targets.json]\n", text)
    text = text.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
        "evaluation_interval: 15s", "evaluation_interval: 1s")
    pod_labels = {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": POD,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "scalekit-shop",
        # The Deployment's annotations, with the port of the test's instance.
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(app_port),
    }
    # The pod's address as Kubernetes discovery gives it (container port 8000); relabelling
    # must swap in the annotated port.
    (workdir / "targets.json").write_text(json.dumps([{"targets": ["127.0.0.1:8000"], "labels": pod_labels}]))
    (workdir / "rules").symlink_to(PROMETHEUS_DIR / "rules")
    (workdir / "prometheus.yml").write_text(text)
    return workdir / "prometheus.yml"


@contextlib.contextmanager
def run_prometheus(config: Path) -> Iterator[str]:
    binary = require_binary("prometheus")
    port = free_port()
    log = (config.parent / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, process=process, log_path=config.parent / "prometheus.log")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(url + "/-/ready", timeout=5).status_code == 200, "Prometheus is ready")
        yield url
    finally:
        stop_process_group(process)
        log.close()


def wait_until(condition: object, what: str, timeout_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if condition():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_seconds} s waiting until {what}")


def query(prometheus: str, promql: str) -> float | None:
    """The value of a one-series instant query; None while the series does not exist yet."""
    response = httpx.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert len(result) <= 1, result
    return float(result[0]["value"][1]) if result else None


class Load:
    """``clients`` threads each sending slow requests back to back, until stopped (bounded)."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + MAX_LOAD_SECONDS
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                self.statuses.append(client.get(self.url + "/slow?seconds=0.5").status_code)

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_in_flight_metric_rises_above_the_hpa_target_under_load_and_falls_back(tmp_path: Path) -> None:
    config_map = k8s_object("ConfigMap", "scalekit-config")["data"]
    workers, threads = int(config_map["WEB_CONCURRENCY"]), int(config_map["THREADS"])
    hpa = k8s_object("HorizontalPodAutoscaler", "scalekit-shop")
    (pods_metric,) = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    target = float(pods_metric["target"]["averageValue"])
    assert target < workers * threads, "the target must be reachable before a pod's request slots are full"
    (rule,) = [rule for rule in adapter_rules() if rule["name"]["as"] == pods_metric["metric"]["name"]]
    # What prometheus-adapter asks Prometheus when the HPA reads this pod's metric.
    promql = adapter_query(rule, label_matchers=f'namespace="{NAMESPACE}",pod=~"{POD}"', group_by="pod")

    def signal() -> float:
        value = query(prometheus, promql)
        return math.nan if value is None else value

    instance = AppInstance("pod", tmp_path, workers=workers, threads=threads)
    instance.start()
    try:
        with run_prometheus(prometheus_config(tmp_path / "prometheus", instance.port)) as prometheus:
            # Relabelling put the pod's labels on the series and scraped the annotated port.
            wait_until(lambda: query(prometheus, f'up{{namespace="{NAMESPACE}",pod="{POD}"}}') == 1,
                       "Prometheus scrapes the pod at its annotated port")
            wait_until(lambda: signal() == 0, "the idle pod reports no requests in flight")

            peaks: list[float] = []

            def above_target() -> bool:
                peaks.append(signal())
                return peaks[-1] > target

            with Load(instance.url, clients=workers * threads) as load:
                wait_until(above_target, f"the HPA metric rises above its target {target}")
            assert load.statuses and set(load.statuses) == {200}
            # HPA arithmetic (for the record): desired = ceil(current x value / target).
            print(f"\nin-flight per pod under load: {max(peaks)} (target {target}); "
                  f"3 pods would become {math.ceil(3 * max(peaks) / target)}")

            wait_until(lambda: signal() < target, "the HPA metric falls back below its target once load stops")
            wait_until(lambda: signal() == 0, "nothing is in flight any more")
            # The shipped rules loaded and evaluate without errors against these real series.
            groups = httpx.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
            assert {group["name"] for group in groups} == {"scalekit.recording", "scalekit.alerts"}
            assert all(rule["health"] != "err" for group in groups for rule in group["rules"]), groups
            # The dashboard's in-flight panel reads the same series.
            assert any("scalekit_http_requests_in_flight" in expr for expr in dashboard_expressions())
    finally:
        instance.stop()
