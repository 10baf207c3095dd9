"""The status page and ``scalekit top`` of an app served by ``scalekit serve --workers 2``
under gunicorn (Prometheus multiprocess mode): the same figures as /metrics, in the HTML
without JavaScript, in a real headless Chromium while traffic runs, and in the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from scalekit.status.tables import format_count
from tests.realapps.support import Served, serving
from tests.status.support import MATCHES_METRICS, Samples, metric_sum, page_values, samples_of

pytestmark = pytest.mark.server

WAIT_SECONDS = 30.0
# Cells of the page whose /metrics series only grow: while traffic runs, the page's figure lies
# between a scrape just before and one just after it was read.
GROWING = ("requests-total", "cache-hit", "cache-miss", "tier-memory-hits", "tier-memory-misses")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1500")


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    with serving("tests.status.served_app:wrapped", "gunicorn", args=["--workers", "2"]) as served:
        yield served


def _wait_until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Traffic:
    """Requests to the app from a thread until stopped (at most a minute, 50,000 requests)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.url, timeout=20) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and self.sent < 50_000:
                client.get(f"/items/{self.sent % 7}")
                client.get(f"/db/{self.sent % 3}")
                self.sent += 2

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=WAIT_SECONDS)


def _disagreeing(shown: dict[str, float], samples: Samples) -> list[str]:
    """The page's cells that differ from the /metrics figure they show."""
    return [cell for cell, (name, labels) in MATCHES_METRICS.items()
            if shown.get(cell) != metric_sum(samples, name, **labels)]


def _scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    response = httpx.get(url + "/metrics", timeout=20)
    assert response.status_code == 200
    return samples_of(response.content)


def test_the_page_without_javascript_matches_metrics_across_workers(server: Served, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with httpx.Client(base_url=server.url, timeout=20, headers={"Connection": "close"}) as client:
        # One worker is held by a request, so the other answers the rest: both count.
        with httpx.stream("GET", f"{server.url}/hold", params={"gate": str(gate)}, timeout=20) as held:
            chunks = held.iter_raw()
            pids = {next(chunks).split()[0].decode()}
            try:
                pids.add(client.get("/pid").text)
                for index in range(20):
                    assert client.get(f"/items/{index % 4}").status_code == 200
                    assert client.get(f"/db/{index}").text == "42"
            finally:
                gate.touch()
            assert b"".join(chunks).endswith(b"released")

        def page_and_metrics() -> tuple[dict[str, float], Samples] | None:
            samples = _scrape(server.url)
            values = page_values(client.get("/_scalekit/").content)
            counted = metric_sum(samples, "scalekit_http_requests_total", route="/db/{id}") >= 20
            return None if _disagreeing(values, samples) or not counted else (values, samples)

        # A worker's requests and hits reach the files the other reads within its flush interval.
        values, samples = _wait_until(page_and_metrics, "the page to show what /metrics shows")
    assert len(pids) == 2, "both workers answered"
    assert not _disagreeing(values, samples)
    # Gauges summed over the live workers, the pool lent and got its connections back.
    assert values["tier-memory-max-bytes"] == 2 * 64 * 1024 * 1024
    assert values["pool-default-used"] == metric_sum(samples, "scalekit_pool_connections",
                                                     database="default", state="used") == 0
    assert values["pool-default-max"] == metric_sum(samples, "scalekit_pool_max_connections") > 0
    assert metric_sum(samples, "scalekit_http_requests_total", route="/db/{id}") >= 20


# --------------------------------------------------------------------------- Chromium


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver; scripts/test does it)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install selenium; the test extra has it)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield browser
    finally:
        browser.quit()


CELL_VALUES = "return Array.from(document.querySelectorAll('[data-value]'), e => [e.id, e.dataset.value]);"
CHART_POINTS = "return (window.scalekitStatus || {charts: []}).charts.map(c => c.data[0].length);"
# Pixels of the chart's canvas drawn in its first series' colour (the line, not the axes).
SERIES_PIXELS = """
const chart = window.scalekitStatus.charts[arguments[0]];
const canvas = chart.element.querySelector('canvas');
const [r, g, b] = chart.spec.series[0][1].match(/[0-9a-f]{2}/g).map(h => parseInt(h, 16));
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let count = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && Math.abs(data[i] - r) < 30 && Math.abs(data[i + 1] - g) < 30
      && Math.abs(data[i + 2] - b) < 30) count++;
}
return count;
"""


def _shown(browser: Any) -> dict[str, float]:
    return {cell: float(value) for cell, value in browser.execute_script(CELL_VALUES)}


def _next_updates(browser: Any, count: int) -> None:
    """Wait until the page has fetched status.json ``count`` more times."""
    start = int(browser.execute_script("return document.body.dataset.updates || '0';"))
    _wait_until(lambda: int(browser.execute_script("return document.body.dataset.updates || '0';"))
                >= start + count, f"{count} more updates of the page")


def test_the_page_in_chromium_while_traffic_runs(server: Served, chromium: Any, tmp_path: Path,
                                                 record_property: Callable[[str, object], None]) -> None:
    with Traffic(server.url) as traffic:
        chromium.get(server.url + "/_scalekit/")
        assert chromium.title == "scalekit status"
        _wait_until(lambda: min(chromium.execute_script(CHART_POINTS) or [0]) >= 2, "two points per chart")
        before = _scrape(server.url)
        _next_updates(chromium, 2)  # both fetched after the scrape began
        shown = _shown(chromium)
        after = _scrape(server.url)
        for cell in GROWING:
            name, labels = MATCHES_METRICS[cell]
            assert metric_sum(before, name, **labels) <= shown[cell] <= metric_sum(after, name, **labels), cell
        assert shown["requests-total"] > 0
        # A worker measures rates from its own earlier readings: the first one it takes has none.
        _wait_until(lambda: _shown(chromium).get("requests-rate", 0) > 0, "a request rate on the page")
        requests_chart_pixels = chromium.execute_script(SERIES_PIXELS, 0)
    assert traffic.sent > 0
    # Quiet now: once every worker has flushed its hits, the readings equal /metrics exactly.

    def page_and_metrics() -> bool:
        _next_updates(chromium, 1)
        samples = _scrape(server.url)
        _next_updates(chromium, 1)
        return not _disagreeing(_shown(chromium), samples)

    _wait_until(page_and_metrics, "the page to show what /metrics shows")
    assert requests_chart_pixels > 50, "the requests/s line is drawn"
    assert all(points >= 2 for points in chromium.execute_script(CHART_POINTS))
    assert chromium.execute_script("return window.scalekitStatus.error") is None
    screenshot = tmp_path / "status-page.png"
    assert chromium.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    stable = Path(tempfile.gettempdir()) / "scalekit-test-artifacts" / "status-page.png"
    stable.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, stable)
    record_property("screenshot", str(stable))
    print(f"status page screenshot: {stable}")


# --------------------------------------------------------------------------- scalekit top


def test_scalekit_top_prints_what_metrics_shows(server: Served) -> None:
    with httpx.Client(base_url=server.url, timeout=20) as client:
        for index in range(6):
            client.get(f"/items/{index % 2}")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}

    def top_and_metrics() -> tuple[list[str], list[str]] | None:
        """The figures ``scalekit top`` printed and those of a scrape just before: equal once
        every worker has flushed its hits (within its flush interval)."""
        samples = _scrape(server.url)
        done = subprocess.run([sys.executable, "-m", "scalekit.cli", "top", "--once", "--url", server.url],
                              capture_output=True, text=True, timeout=60, env=env, check=False)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith(f"scalekit top — {server.url} at ")

        def line_of(label: str) -> list[str]:
            return next(line.split() for line in lines if line.startswith(f"  {label}  "))

        printed = [line_of("requests")[-1], line_of("cache hit")[-1], line_of("memory")[2]]
        scraped = [format_count(metric_sum(samples, "scalekit_http_requests_total")),
                   format_count(metric_sum(samples, "scalekit_cache_requests_total", outcome="hit")),
                   format_count(metric_sum(samples, "scalekit_cache_lookups_total", tier="memory", outcome="hit"))]
        return (lines, printed) if printed == scraped else None

    lines, _ = _wait_until(top_and_metrics, "scalekit top to print what /metrics shows")
    assert "Top routes by time saved" in lines and any("/items/{id}" in line for line in lines)


def test_a_browser_opens_a_token_protected_page_with_the_token_as_password(chromium: Any) -> None:
    """With metrics.token (loopback no longer enough), the token as the password of the
    browser's login (here in the URL) opens the page, and its script's polls authenticate too."""
    from tests.status.test_top import TOKEN, served

    with served(metrics={"token": TOKEN}) as url:
        host = url.removeprefix("http://")
        assert httpx.get(f"{url}/_scalekit/", timeout=20).status_code == 401
        chromium.get(f"http://anyone:{TOKEN}@{host}/_scalekit/")
        assert chromium.title == "scalekit status"
        _next_updates(chromium, 2)
        assert chromium.execute_script("return window.scalekitStatus.error") is None
