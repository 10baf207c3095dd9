"""What the container runs, run here: deploy/gunicorn.conf.py (settings from the environment,
several workers merged into one /metrics, the trusted-proxy rule) and deploy/healthcheck.py
(the Docker HEALTHCHECK, the compose healthcheck and the Kubernetes readiness probe).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import DEPLOY, GUNICORN_CONF, AppInstance

HEALTHCHECK = DEPLOY / "healthcheck.py"


def run_healthcheck(bind: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BIND": bind}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], check=False, capture_output=True, text=True, env=env,
        timeout=30)


@pytest.fixture
def gunicorn_settings(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """deploy/gunicorn.conf.py evaluated as gunicorn does, with one worker (so it leaves this
    process's PROMETHEUS_MULTIPROC_DIR alone)."""
    for name in ("APP_MODULE", "BIND", "THREADS", "WORKER_CLASS", "FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    return runpy.run_path(str(GUNICORN_CONF))


def test_defaults_match_the_image_and_the_example_app(gunicorn_settings: dict[str, Any]) -> None:
    assert gunicorn_settings["wsgi_app"] == "examples.flask_shop.app:app"
    assert gunicorn_settings["bind"] == ["0.0.0.0:8000"]
    assert gunicorn_settings["worker_class"] == "gthread"
    # Longer than nginx's upstream keepalive_timeout (60 s), see deploy/nginx/nginx.conf.
    assert gunicorn_settings["keepalive"] > 60
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


@pytest.mark.parametrize("peer, forwarded, seen", [
    pytest.param("10.0.0.5", "203.0.113.9", "203.0.113.9", id="trusted proxy: the client it names"),
    pytest.param("10.0.0.5", "198.51.100.1, 203.0.113.9", "203.0.113.9", id="trusted proxy: the entry it added"),
    pytest.param("192.0.2.50", "203.0.113.9", "192.0.2.50", id="direct client: header ignored"),
    pytest.param("10.0.0.5", "not-an-ip", "10.0.0.5", id="garbage: ignored"),
    pytest.param("10.0.0.5", None, "10.0.0.5", id="no header"),
])
def test_trusted_forwarded_for(gunicorn_settings: dict[str, Any], peer: str, forwarded: str | None, seen: str) -> None:
    captured: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        captured["client"] = environ["REMOTE_ADDR"]
        return []

    middleware = gunicorn_settings["TrustedForwardedFor"](app, ["10.0.0.0/8", "::1"])
    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    middleware(environ, lambda *_: None)
    assert captured["client"] == seen


@pytest.mark.server
def test_healthcheck_passes_on_a_running_instance_and_fails_on_a_stopped_one(tmp_path: Path) -> None:
    instance = AppInstance("container", tmp_path, workers=2)
    instance.start()
    try:
        result = run_healthcheck(f"0.0.0.0:{instance.port}")
        assert result.returncode == 0, result.stderr
        # Two workers, one /metrics: the multiprocess files of both are merged (each worker's
        # counts reach them with its next flush, every 0.5 s).
        with httpx.Client(base_url=instance.url, timeout=10) as client:
            for _ in range(20):
                client.get("/whoami")
            deadline = time.monotonic() + 20
            while True:
                text = client.get("/metrics").text
                total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                            if line.startswith("scalekit_http_requests_total{"))
                if total >= 20 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert total >= 20
        assert len(list((tmp_path / "container-metrics").glob("*.db"))) >= 2
    finally:
        instance.stop()
    result = run_healthcheck(f"0.0.0.0:{instance.port}")
    assert result.returncode == 1 and "unhealthy" in result.stderr
