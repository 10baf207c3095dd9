"""The ``scalekit`` command line: serve, check, demo and the layers' plugin commands."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import scalekit
from scalekit import cli
from tests.servers import REPO_ROOT, free_port, stop_process_group, wait_for_port


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[cli.ServePlan]]:
    """Capture the server command instead of replacing the test process with it. What a command
    sets up for the server in this process (``SCALEKIT_STATE_DIR``, the working directory,
    ``sys.path``) is restored afterwards, and the folders the server would have removed at its
    exit are removed: no later test inherits them."""
    plans: list[cli.ServePlan] = []
    monkeypatch.setattr(cli, "exec_server", plans.append)
    monkeypatch.delenv("SCALEKIT_STATE_DIR", raising=False)  # restored (or unset) after the test
    monkeypatch.chdir(Path.cwd())
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield plans
    for plan in plans:
        for folder in plan.cleanup_dirs:
            shutil.rmtree(folder, ignore_errors=True)


def test_help_lists_core_and_plugin_commands(runner: CliRunner) -> None:
    result = runner.invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    for name in ("serve", "check", "demo"):
        assert name in result.output
    for layer, module in cli.layer_plugins().items():
        assert module is not None, cli._PLUGIN_ERRORS.get(layer)
        for command in getattr(module, "COMMANDS", ()):
            assert cli.main.commands[command.name] is command


# --------------------------------------------------------------------------- serve


@pytest.mark.parametrize(("args", "server", "expected"), [
    pytest.param(["tests.apps.plain:wsgi_app"], "gunicorn",
                 ["scalekit.serving:load_served_app()", "--config", "python:scalekit.gunicorn_conf",
                  "--bind", "127.0.0.1:8000", "--workers", "1"], id="wsgi app under gunicorn"),
    pytest.param(["tests.apps.plain:asgi_app", "--bind", "[::1]:9001", "-w", "2"], "uvicorn",
                 ["scalekit.serving:load_served_app", "--factory", "--host", "::1", "--port", "9001",
                  "--workers", "2"], id="asgi app under uvicorn"),
    pytest.param(["tests.apps.plain:wrapped_asgi_app"], "uvicorn", ["--factory"], id="already wrapped"),
    pytest.param(["tests.apps.flask_app:app", "--threads", "8"], "gunicorn", ["--threads", "8"], id="flask"),
    pytest.param(["tests.apps.starlette_app:app"], "uvicorn", ["--factory"], id="starlette"),
    pytest.param(["tests.apps.flask_app:app", "--server", "granian", "--threads", "4"], "granian",
                 ["scalekit.serving:load_served_app", "--factory", "--interface", "wsgi", "--host", "127.0.0.1",
                  "--port", "8000", "--workers", "1", "--no-ws", "--blocking-threads", "4"],
                 id="wsgi app under granian"),
    pytest.param(["tests.apps.plain:asgi_app", "--server", "granian"], "granian",
                 ["--factory", "--interface", "asgi"], id="asgi app under granian"),
])
def test_serve_plans_the_right_server(runner: CliRunner, planned: list[cli.ServePlan], args: list[str],
                                      server: str, expected: list[str]) -> None:
    result = runner.invoke(cli.main, ["serve", *args])
    assert result.exit_code == 0, result.output
    (plan,) = planned
    assert plan.server == server
    assert plan.argv[:3] == [sys.executable, "-m", server]
    joined = " ".join(plan.argv)
    assert " ".join(expected) in joined
    assert plan.env[cli.SERVE_APP_ENV] == args[0]
    assert plan.url in result.output


def test_serve_keeps_websockets_on_under_every_asgi_server(planned: list[cli.ServePlan]) -> None:
    for server in ("uvicorn", "granian"):
        plan = cli.plan_serve("m:app", kind="asgi", server=server, environ={})
        assert "--no-ws" not in plan.argv, (server, plan.argv)


def test_serve_with_several_workers_sets_a_metrics_directory(planned: list[cli.ServePlan]) -> None:
    plan = cli.plan_serve("m:app", kind="wsgi", workers=3, environ={})
    assert Path(plan.env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
    Path(plan.env["PROMETHEUS_MULTIPROC_DIR"]).rmdir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in cli.plan_serve("m:app", kind="wsgi", workers=1, environ={}).env
    kept = cli.plan_serve("m:app", kind="wsgi", workers=3, environ={"PROMETHEUS_MULTIPROC_DIR": "/srv/m"})
    assert kept.env["PROMETHEUS_MULTIPROC_DIR"] == "/srv/m"


@pytest.mark.parametrize(("args", "fragment"), [
    pytest.param(["no_such_module_here:app"], "cannot import 'no_such_module_here'", id="missing module"),
    pytest.param(["tests.apps.plain:nope"], "has no attribute 'nope'", id="missing attribute"),
    pytest.param(["tests.apps.plain:__doc__"], "needs a WSGI or ASGI application", id="not an app"),
    pytest.param(["tests.apps.plain:wsgi_app", "--bind", "localhost"], "is not HOST:PORT", id="bad bind"),
    pytest.param(["tests.apps.plain:wsgi_app", "--workers", "0"], "0", id="zero workers"),
])
def test_serve_refuses_bad_input(runner: CliRunner, planned: list[cli.ServePlan], args: list[str],
                                 fragment: str) -> None:
    result = runner.invoke(cli.main, ["serve", *args])
    assert result.exit_code != 0
    assert fragment in result.output
    assert planned == []


@pytest.mark.parametrize(("target", "server", "accepted"), [
    pytest.param("tests.apps.plain:asgi_app", "gunicorn", "['uvicorn', 'granian']", id="asgi under gunicorn"),
    pytest.param("tests.apps.plain:wsgi_app", "uvicorn", "['gunicorn', 'granian']", id="wsgi under uvicorn"),
])
def test_serve_refuses_a_server_that_cannot_serve_the_app(
        runner: CliRunner, planned: list[cli.ServePlan], target: str, server: str, accepted: str) -> None:
    result = runner.invoke(cli.main, ["serve", target, "--server", server])
    assert result.exit_code == 2
    assert f"{server} does not serve" in result.output and accepted in result.output
    assert planned == []


def test_exec_server_empties_the_metrics_directory_for_servers_without_hooks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execs: list[list[str]] = []
    monkeypatch.setattr(cli.os, "execvpe", lambda file, argv, env: execs.append(argv))
    stale, kept = tmp_path / "counter_123.db", tmp_path / "notes.txt"
    stale.write_bytes(b"old run"), kept.write_text("not a metric file")
    plan = cli.plan_serve("m:app", kind="wsgi", workers=2, server="granian",
                          environ={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    cli.exec_server(plan)
    assert execs == [plan.argv]
    assert not stale.exists() and kept.exists()


def test_serve_refuses_bad_config(runner: CliRunner, planned: list[cli.ServePlan]) -> None:
    result = runner.invoke(cli.main, ["serve", "tests.apps.plain:wsgi_app"], env={"SCALEKIT_METRICS_PTH": "/m"})
    assert result.exit_code == 2
    assert "SCALEKIT_METRICS_PATH" in result.output and planned == []


def test_kind_option_forces_the_kind(runner: CliRunner, planned: list[cli.ServePlan]) -> None:
    result = runner.invoke(cli.main, ["serve", "tests.apps.plain:wsgi_app", "--kind", "asgi"])
    assert result.exit_code == 0 and planned[0].server == "uvicorn"


def test_load_served_app_wraps_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.apps import plain
    monkeypatch.setenv(cli.SERVE_APP_ENV, "tests.apps.plain:wsgi_app")
    monkeypatch.setenv(cli.SERVE_KIND_ENV, "wsgi")
    served = cli.load_served_app()
    assert isinstance(served, scalekit.wsgi.WSGIRoot) and served.app is plain.wsgi_app
    monkeypatch.setenv(cli.SERVE_APP_ENV, "tests.apps.plain:wrapped_asgi_app")
    monkeypatch.setenv(cli.SERVE_KIND_ENV, "asgi")
    assert cli.load_served_app() is plain.wrapped_asgi_app


# --------------------------------------------------------------------------- check


def _plugin(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def test_check_reports_each_plugin_and_exits_1_when_something_is_unreachable(
        runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config: Any) -> list[tuple[str, bool, str]]:
        raise RuntimeError("plugin bug")

    monkeypatch.setattr(cli, "layer_plugins", lambda: {
        "good": _plugin("good", check=lambda config: [("redis", True, "PONG")]),
        "down": _plugin("down", check=lambda config: [("database default", False, "connection refused")]),
        "broken": _plugin("broken", check=broken),
        "quiet": _plugin("quiet"),
    })
    result = runner.invoke(cli.main, ["check"])
    assert result.exit_code == 1
    assert "ok    redis: PONG" in result.output
    assert "FAIL  database default: connection refused" in result.output
    assert "FAIL  broken: check failed: RuntimeError: plugin bug" in result.output


def test_check_shows_every_layer_and_hides_secrets(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "layer_plugins", dict)
    token = "a-very-secret-token-value"
    result = runner.invoke(cli.main, ["check"], env={
        "SCALEKIT_METRICS_TOKEN": token, "SCALEKIT_REDIS_URL": "redis://user:hunter2@127.0.0.1:1/0",
        "SCALEKIT_CACHE_ENABLED": "false"})
    assert result.exit_code == 0, result.output
    for line in ("[metrics] on", "[cdn] on", "[cache] off", "[pool] on", "metrics.token = <set>"):
        assert line in result.output
    assert token not in result.output and "hunter2" not in result.output
    assert "redis://user:***@127.0.0.1:1/0" in result.output


@pytest.mark.parametrize(("env", "fragment"), [
    pytest.param({"SCALEKIT_CACHE_MEMORY_ENABLD": "1"}, "SCALEKIT_CACHE_MEMORY_ENABLED", id="unknown variable"),
    pytest.param({"SCALEKIT_METRICS_PATH": "metrics"}, "metrics.path is 'metrics'", id="bad value"),
    pytest.param({"SCALEKIT_CONFIG": "/nonexistent/scalekit.toml"}, "does not exist", id="missing file"),
])
def test_check_exits_2_on_bad_config(runner: CliRunner, env: dict[str, str], fragment: str) -> None:
    result = runner.invoke(cli.main, ["check"], env=env)
    assert result.exit_code == 2
    assert fragment in result.output


def test_check_with_the_real_plugins_on_defaults(runner: CliRunner) -> None:
    result = runner.invoke(cli.main, ["check"])
    assert result.exit_code == 0, result.output
    assert "configuration: valid" in result.output


# --------------------------------------------------------------------------- demo


def test_demo_builtin_serves_the_shop(runner: CliRunner, planned: list[cli.ServePlan]) -> None:
    result = runner.invoke(cli.main, ["demo", "--port", "8765"])
    assert result.exit_code == 0, result.output
    assert planned[0].env[cli.SERVE_APP_ENV] == "scalekit.demo:app"
    assert "http://127.0.0.1:8765/" in result.output


def test_each_demo_run_starts_from_its_own_new_state_dir(runner: CliRunner, planned: list[cli.ServePlan],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_STATE_DIR", "/should/not/be/used")  # restored after the test
    for _ in range(2):
        result = runner.invoke(cli.main, ["demo"])
        assert result.exit_code == 0, result.output
    folders = [Path(plan.env["SCALEKIT_STATE_DIR"]) for plan in planned]
    assert folders[0] != folders[1]
    for folder in folders:
        assert folder.is_dir() and folder.name.startswith("scalekit-demo-builtin-")
        assert not folder.is_relative_to(Path.cwd())
    assert str(folders[1]) in result.output  # the user is told where the state is


def test_demo_state_dir_option_keeps_the_state_between_runs(runner: CliRunner, planned: list[cli.ServePlan],
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEKIT_STATE_DIR", str(tmp_path / "unused"))
    result = runner.invoke(cli.main, ["demo", "--state-dir", str(tmp_path / "kept")])
    assert result.exit_code == 0, result.output
    assert planned[0].env["SCALEKIT_STATE_DIR"] == str(tmp_path / "kept")


def test_demo_framework_without_example_fails_clearly(runner: CliRunner, planned: list[cli.ServePlan],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "find_example", lambda framework: None)
    result = runner.invoke(cli.main, ["demo", "--framework", "django"])
    assert result.exit_code == 1
    assert "examples/django_shop/app.py was not found" in result.output and planned == []


def test_demo_framework_loads_the_example(runner: CliRunner, planned: list[cli.ServePlan], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shop = tmp_path / "examples" / "flask_shop"
    shop.mkdir(parents=True)
    (tmp_path / "examples" / "__init__.py").write_text("")
    (shop / "__init__.py").write_text("")
    (shop / "app.py").write_text("from tests.apps.flask_app import app\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    monkeypatch.setattr(sys, "path", list(sys.path))  # demo puts the checkout first; undo that
    for name in [name for name in sys.modules if name == "examples" or name.startswith("examples.")]:
        monkeypatch.delitem(sys.modules, name)  # this checkout's own examples package
    try:
        result = runner.invoke(cli.main, ["demo", "--framework", "flask"])
    finally:
        for name in ("examples.flask_shop.app", "examples.flask_shop", "examples"):
            sys.modules.pop(name, None)
    assert result.exit_code == 0, result.output
    assert planned[0].env[cli.SERVE_APP_ENV] == "examples.flask_shop.app:app"
    assert planned[0].server == "gunicorn"
    assert planned[0].env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)


# --------------------------------------------------------------------------- real runs


@contextlib.contextmanager
def running(args: list[str], cwd: Path, log_path: Path) -> Iterator[str]:
    """Run ``python -m scalekit.cli ARGS`` on a free port in its own process group."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "scalekit.cli", *args, *_port_args(args, port)],
                                   cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, process=process, log_path=log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)


def _port_args(args: list[str], port: int) -> list[str]:
    return ["--port", str(port)] if args[0] == "demo" else ["--bind", f"127.0.0.1:{port}"]


@pytest.mark.server
@pytest.mark.parametrize(("target", "workers", "server"), [
    pytest.param("tests.apps.plain:wsgi_app", "2", "auto", id="wsgi, gunicorn with two workers"),
    pytest.param("tests.apps.plain:asgi_app", "1", "auto", id="asgi, uvicorn"),
    pytest.param("tests.apps.plain:wsgi_app", "2", "granian", id="wsgi, granian with two workers"),
    pytest.param("tests.apps.plain:asgi_app", "1", "granian", id="asgi, granian"),
])
def test_scalekit_serve_really_serves_the_wrapped_app(target: str, workers: str, server: str,
                                                      tmp_path: Path) -> None:
    args = ["serve", target, "--workers", workers, "--server", server]
    counted = 'scalekit_http_requests_total{method="GET",route="unmatched",status="2xx"} 1.0'
    with running(args, REPO_ROOT, tmp_path / "serve.log") as url:
        assert httpx.get(f"{url}/hello", timeout=20).text == "hello /hello"
        # With two workers the scrape may land on the other one: the request is in its files
        # once the serving worker's flusher ran (every 0.5 s).
        deadline = time.monotonic() + 20
        while True:
            metrics = httpx.get(f"{url}/metrics", timeout=20)
            if counted in metrics.text or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert metrics.status_code == 200
    assert counted in metrics.text


@pytest.mark.server
def test_scalekit_demo_runs_the_shop(tmp_path: Path) -> None:
    with running(["demo"], tmp_path, tmp_path / "demo.log") as url, \
            httpx.Client(base_url=url, timeout=20) as client:
        assert "scalekit demo shop" in client.get("/").text
        first = client.get("/api/products/1")
        assert first.json()["id"] == 1
        statuses = [client.get("/api/products/1").headers["cache-status"] for _ in range(3)]
        assert any("hit" in status for status in statuses), statuses
        assert client.post("/api/products/1/price", data={"price_cents": "999"}).json()["price_cents"] == 999
        assert client.get("/api/products/1").json()["price_cents"] == 999  # invalidated by the write
        assert "scalekit_http_requests_total" in client.get("/metrics").text
