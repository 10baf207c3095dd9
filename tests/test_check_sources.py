"""``scalekit check`` says where each setting came from and, where sources disagree, which one
is used: scalekit.toml, SCALEKIT_* variables, Django's settings.SCALEKIT, Flask's
app.config["SCALEKIT"] and wrap() arguments, each ranked as the app itself ranks them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalekit import cli
from tests.servers import REPO_ROOT

TOML = '[metrics]\npath = "/from-toml"\n[cache.memory]\nmax_bytes = 5000000\nenabled = false\n'
HELLO = '''
def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''


def run_check(cwd: Path, *arguments: str, **variables: str) -> str:
    """``scalekit check`` in its own process (an app's import and Django's settings are global)."""
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith(("SCALEKIT_", "DJANGO_"))}
    environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "scalekit.cli", "check", *arguments],
                            check=False, cwd=cwd,
                            env={**environ, **variables}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_each_setting_names_its_source_and_the_winner_of_a_disagreement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scalekit.toml").write_text(TOML)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "layer_plugins", dict)
    result = CliRunner().invoke(cli.main, ["check"], env={
        "SCALEKIT_METRICS_PATH": "/from-env", "SCALEKIT_CACHE_MEMORY_ENABLED": "off"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    toml = str(tmp_path / "scalekit.toml")
    assert "    metrics.path = '/from-env'  (environment variable SCALEKIT_METRICS_PATH)" in lines
    assert (f"        {toml} sets '/from-toml': ignored, environment variable "
            "SCALEKIT_METRICS_PATH is used") in lines
    assert f"    cache.memory.max_bytes = 5000000  ({toml})" in lines
    assert "    metrics.status_path = '/_scalekit/'  (default)" in lines
    # "off" and false agree once converted: no disagreement to report.
    assert ("    cache.memory.enabled = False  (environment variable "
            "SCALEKIT_CACHE_MEMORY_ENABLED)") in lines
    assert sum(": ignored, " in line for line in lines) == 1


def test_django_settings_win_over_the_environment_and_the_file(tmp_path: Path) -> None:
    pytest.importorskip("django")
    (tmp_path / "scalekit.toml").write_text(TOML)
    (tmp_path / "shop_settings.py").write_text(
        'SECRET_KEY = "test"\nSCALEKIT = {"metrics": {"path": "/from-django"}}\n')
    output = run_check(tmp_path, DJANGO_SETTINGS_MODULE="shop_settings",
                       SCALEKIT_METRICS_PATH="/from-env")
    lines = output.splitlines()
    assert "    metrics.path = '/from-django'  (settings.SCALEKIT)" in lines
    assert ("        environment variable SCALEKIT_METRICS_PATH sets '/from-env': ignored, "
            "settings.SCALEKIT is used") in lines
    assert (f"        {tmp_path / 'scalekit.toml'} sets '/from-toml': ignored, "
            "settings.SCALEKIT is used") in lines


def test_an_app_target_shows_its_wrap_arguments_over_the_environment(tmp_path: Path) -> None:
    (tmp_path / "wrapped.py").write_text(
        "import scalekit\n" + HELLO
        + 'app = scalekit.wrap(hello, metrics={"path": "/from-wrap"})\n')
    output = run_check(tmp_path, "wrapped:app", SCALEKIT_METRICS_PATH="/from-env")
    lines = output.splitlines()
    assert "  wrapped:app, as it wraps itself" in lines
    assert "    metrics.path = '/from-wrap'  (arguments)" in lines
    assert ("        environment variable SCALEKIT_METRICS_PATH sets '/from-env': ignored, "
            "arguments is used") in lines


def test_a_flask_target_is_read_as_scalekit_serve_would_wrap_it(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    (tmp_path / "flask_shop.py").write_text(
        "from flask import Flask\napp = Flask(__name__)\n"
        'app.config["SCALEKIT"] = {"metrics": {"path": "/from-flask"}}\n')
    output = run_check(tmp_path, "flask_shop:app", SCALEKIT_METRICS_PATH="/from-env")
    lines = output.splitlines()
    assert "  flask_shop:app, wrapped as scalekit serve would" in lines
    assert "    metrics.path = '/from-flask'  (app.config['SCALEKIT'])" in lines
    assert ("        environment variable SCALEKIT_METRICS_PATH sets '/from-env': ignored, "
            "app.config['SCALEKIT'] is used") in lines


def test_a_starlette_middleware_install_is_read_from_its_middleware_arguments(
        tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    (tmp_path / "api.py").write_text(
        "from fastapi import FastAPI\nfrom scalekit_fastapi import ScaleKitMiddleware\n"
        "app = FastAPI()\n"
        'app.add_middleware(ScaleKitMiddleware, metrics={"path": "/from-middleware"})\n')
    output = run_check(tmp_path, "api:app", SCALEKIT_METRICS_PATH="/from-env")
    lines = output.splitlines()
    assert "  api:app, as it wraps itself" in lines
    assert "    metrics.path = '/from-middleware'  (arguments)" in lines
