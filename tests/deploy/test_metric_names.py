"""Every metric name the dashboard, the alert rules and prometheus-adapter use is one scalekit
really exports: declared in scalekit/metrics/instruments.py AND present in a live /metrics scrape.

Two live scrapes: the ASGI fleet app under uvicorn (one process: every declared family appears
with its TYPE, samples or not), and the WSGI fleet app under the shipped gunicorn settings with
two workers (multiprocess mode: only series with data), after a request to each layer's paths.
Names whose series only exist once something rare happens (an eviction, an open circuit, a
fleet invalidation over Redis) are checked against the declared families and the live TYPE
lines; the test prints which ones, and asserts the core set has live samples.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict

import httpx
import pytest
import redis
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from scalekit.metrics import instruments
from tests.servers import free_port, run_server

from .artefacts import adapter_rules, dashboard_expressions, metric_names, rule_expressions
from .harness import AppInstance

pytestmark = [pytest.mark.server, pytest.mark.redis]

SELECTOR = re.compile(r"(scalekit_[a-zA-Z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
SCRAPE_LABELS = {"instance", "job", "namespace", "pod", "le"}   # added by Prometheus, not scalekit
LabelValues = dict[str, dict[str, set[str]]]

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
# These must have live samples after the requests below: request metrics, the cache, the pool.
MUST_HAVE_SAMPLES = {
    "scalekit_http_requests_total", "scalekit_http_request_duration_seconds_bucket",
    "scalekit_http_requests_in_flight", "scalekit_cache_requests_total", "scalekit_cache_lookups_total",
    "scalekit_cache_stores_total", "scalekit_cache_invalidations_total", "scalekit_pool_connections",
    "scalekit_pool_max_connections", "scalekit_pool_wait_seconds_bucket", "scalekit_cdn_not_modified_total",
}


def sample_names(families: dict[str, str]) -> set[str]:
    """Exposed sample names of metric families given as {family name: type}."""
    return {name + suffix for name, kind in families.items() for suffix in SUFFIXES.get(kind, ("",))}


def declared_families() -> dict[str, str]:
    """The families scalekit/metrics/instruments.py declares: {name: type}."""
    families: dict[str, str] = {}
    for value in vars(instruments).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                families[family.name] = family.type
    return families


def referenced_names() -> dict[str, set[str]]:
    adapter = [rule["seriesQuery"] + " " + rule["metricsQuery"] for rule in adapter_rules()]
    return {
        "grafana dashboard": metric_names(dashboard_expressions()),
        "alert and recording rules": metric_names(rule_expressions()),
        "prometheus-adapter (HPA)": metric_names(adapter),
    }


def exercise(client: httpx.Client) -> None:
    """A request through each layer, so their series exist."""
    client.get("/cacheable")
    etag = client.get("/cacheable").headers.get("etag")             # cache hit
    assert etag, "the CDN layer gives the cacheable page an ETag"
    assert client.get("/cacheable", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/db").json()["db"] == "ok"                   # pool
    client.get("/invalidate")                                        # invalidation
    client.get("/private")
    client.post("/upload", content=b"x" * 1000)
    assert client.get("/fail").status_code == 500                  # status="5xx"


def live_families(text: str, label_values: LabelValues) -> tuple[dict[str, str], set[str]]:
    """{family: type} from the TYPE lines, and the sample names that carry values."""
    families, samples = {}, set()
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples.add(sample.name)
            for label, value in sample.labels.items():
                label_values[sample.name][label].add(value)
    return families, samples


@pytest.fixture(scope="module")
def live_scrapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], set[str], LabelValues]:
    workdir = tmp_path_factory.mktemp("metrics")
    label_values: LabelValues = defaultdict(lambda: defaultdict(set))
    # The machine's Redis (never restarted here), under a key prefix of this run only: the
    # redis tier's series (tier="redis") exist only when L2 is configured.
    prefix = f"scalekit-deploy-test-{uuid.uuid4().hex}:"
    # An edge purge target (nothing listens there): the purge series the alerts select exist.
    env = {"SCALEKIT_STATE_DIR": str(workdir / "uvicorn-state"), "SCALEKIT_REDIS_URL": "redis://127.0.0.1:6379/0",
           "SCALEKIT_REDIS_KEY_PREFIX": prefix, "SCALEKIT_CDN_SURROGATE_KEYS": "varnish",
           "SCALEKIT_CDN_PURGE_TARGETS_EDGE_KIND": "varnish",
           "SCALEKIT_CDN_PURGE_TARGETS_EDGE_URLS": f"http://127.0.0.1:{free_port()}"}
    try:
        with run_server("uvicorn", "tests.deploy.fleet_app:asgi_app", env=env) as url, \
                httpx.Client(base_url=url, timeout=10) as client:
            exercise(client)
            single_families, single_samples = live_families(client.get("/metrics").text, label_values)
    finally:
        client_redis = redis.Redis(host="127.0.0.1", port=6379, db=0)
        for key in client_redis.scan_iter(match=f"*{prefix}*"):
            client_redis.delete(key)
        client_redis.close()
    instance = AppInstance("multi", workdir, workers=2)
    instance.start()
    try:
        with httpx.Client(base_url=instance.url, timeout=10) as client:
            for _ in range(2):   # two workers: let both see traffic
                exercise(client)
            multi_families, multi_samples = live_families(client.get("/metrics").text, label_values)
    finally:
        instance.stop()
    return {**single_families, **multi_families}, single_samples | multi_samples, label_values


def test_declared_families_are_what_instruments_says() -> None:
    families = declared_families()
    assert families["scalekit_http_requests"] == "counter"
    assert families["scalekit_http_request_duration_seconds"] == "histogram"
    assert families["scalekit_http_requests_in_flight"] == "gauge"


@pytest.mark.parametrize("consumer", ["grafana dashboard", "alert and recording rules", "prometheus-adapter (HPA)"])
def test_referenced_names_are_declared_in_instruments(consumer: str) -> None:
    names = referenced_names()[consumer]
    assert names, consumer
    unknown = names - sample_names(declared_families())
    assert not unknown, f"{consumer} uses names scalekit does not declare: {sorted(unknown)}"


def test_referenced_names_are_exported_by_a_live_scrape(
    live_scrapes: tuple[dict[str, str], set[str], LabelValues],
) -> None:
    live_types, live_samples, _ = live_scrapes
    exported = sample_names(live_types)
    report: dict[str, dict[str, list[str]]] = {}
    for consumer, names in referenced_names().items():
        missing = names - exported
        assert not missing, f"{consumer} uses names no live /metrics exposes: {sorted(missing)}"
        report[consumer] = {
            "live samples": sorted(names & live_samples),
            "declared and typed live, no samples yet": sorted(names - live_samples),
        }
    missing_samples = MUST_HAVE_SAMPLES - live_samples
    assert not missing_samples, f"no live samples for {sorted(missing_samples)}"
    # Shown with -s / in the CI log: which names were only checked against the declarations.
    print("\nmetric names by consumer:\n" + json.dumps(report, indent=2))


def test_label_values_in_queries_exist_in_a_live_scrape(
    live_scrapes: tuple[dict[str, str], set[str], LabelValues],
) -> None:
    """tier="redis", outcome=~"hit|stale", state="used": values scalekit really uses."""
    _, _, label_values = live_scrapes
    expressions = dashboard_expressions() + rule_expressions() + [rule["metricsQuery"] for rule in adapter_rules()]
    checked = 0
    for expr in expressions:
        for metric, matchers in SELECTOR.findall(expr):
            for label, operator, value in MATCHER.findall(matchers):
                if label in SCRAPE_LABELS or "$" in value or operator not in ("=", "=~"):
                    continue
                wanted = value.split("|") if operator == "=~" else [value]
                seen = label_values[metric][label]
                assert set(wanted) <= seen, f"{metric}{{{label}{operator}{value!r}}}: live values are {sorted(seen)}"
                checked += 1
    assert checked >= 5
