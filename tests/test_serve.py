"""``scalekit serve``: which targets it accepts (apps, factories) and what it leaves behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import scalekit
from scalekit import cli
from scalekit.serving import kind_of
from tests.adapters.support import wait_until
from tests.apps import factories, plain
from tests.realapps.support import serving
from tests.servers import REPO_ROOT


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> list[cli.ServePlan]:
    """Capture the server command instead of replacing the test process with it."""
    plans: list[cli.ServePlan] = []
    monkeypatch.setattr(cli, "exec_server", plans.append)
    return plans


@pytest.fixture
def calls() -> Iterator[list[tuple[tuple[object, ...], dict[str, object]]]]:
    factories.CALLS.clear()
    yield factories.CALLS
    factories.CALLS.clear()


# --------------------------------------------------------------------------- factories


@pytest.mark.parametrize(("target", "factory", "expected_call"), [
    pytest.param("tests.apps.factories:create_app()", False, (("hello",), {"debug": False}),
                 id="module:create_app()"),
    pytest.param("tests.apps.factories:create_app('howdy', debug=True)", False,
                 (("howdy",), {"debug": True}), id="literal arguments, as gunicorn and flask --app"),
    pytest.param("tests.apps.factories:create_app", True, (("hello",), {"debug": False}),
                 id="--factory, as uvicorn and granian"),
])
def test_a_factory_target_is_called_to_get_the_app(target: str, factory: bool, expected_call: object,
                                                   calls: list[object]) -> None:
    app = cli.import_target(target, factory=factory)
    assert calls == [expected_call]
    assert kind_of(app, None) == "wsgi"


def test_a_factory_reached_through_an_attribute() -> None:
    assert cli.import_target("tests.apps.factories:Factories.make()") is plain.wsgi_app


def test_without_an_attribute_app_then_application_is_served() -> None:
    module = type(sys)("serve_default_name")
    module.application = plain.wsgi_app  # type: ignore[attr-defined]
    sys.modules["serve_default_name"] = module
    try:
        assert cli.import_target("serve_default_name") is plain.wsgi_app
    finally:
        del sys.modules["serve_default_name"]


@pytest.mark.parametrize(("args", "fragments"), [
    pytest.param(["tests.apps.factories:create_app(greeting=open('x'))"],
                 ["literal", "create_app(greeting=open('x'))"], id="a non-literal argument"),
    pytest.param(["tests.apps.factories:create_app()()"], ["create_app()()", "create_app('production', debug=False)"],
                 id="not a name or a call of one"),
    pytest.param(["tests.apps.factories:create_app(1, 2, 3)"],
                 ["create_app(1, 2, 3)", "positional"], id="arguments the factory does not take"),
    pytest.param(["tests.apps.factories:nope()"], ["has no attribute 'nope'"], id="no such factory"),
    pytest.param(["tests.apps.factories:returns_none()"], ["returned None"], id="a factory returning None"),
    pytest.param(["tests.apps.factories:create_app()", "--factory"], ["--factory", "create_app()"],
                 id="called twice"),
    pytest.param(["tests.apps.plain:wsgi_app", "--factory"], ["--factory", "wsgi_app"],
                 id="--factory on an app"),
    pytest.param(["tests.apps.factories:create_asgi_app"], ["looks like an app factory",
                                                            "create_asgi_app()", "--factory"],
                 id="a factory served as if it were the app"),
])
def test_a_bad_target_says_what_was_wrong(args: list[str], fragments: list[str],
                                          planned: list[cli.ServePlan]) -> None:
    result = CliRunner().invoke(cli.main, ["serve", *args])
    assert result.exit_code != 0 and planned == []
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_the_factory_s_own_error_is_not_hidden(planned: list[cli.ServePlan]) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "tests.apps.factories:broken_factory()"])
    assert isinstance(result.exception, LookupError) and planned == []


def test_serve_passes_the_factory_to_the_workers(planned: list[cli.ServePlan],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "tests.apps.factories:create_asgi_app", "--factory"])
    assert result.exit_code == 0, result.output
    (plan,) = planned
    assert plan.server == "uvicorn"
    for name, value in plan.env.items():
        if name.startswith("SCALEKIT_SERVE_"):
            monkeypatch.setenv(name, value)
    served = cli.load_served_app()
    assert isinstance(served, scalekit.asgi.ASGIRoot) and served.app is plain.asgi_app


# --------------------------------------------------------------------------- what serve leaves


@pytest.mark.server
@pytest.mark.parametrize(("target", "server"), [
    pytest.param("tests.apps.plain:wsgi_app", "gunicorn", id="gunicorn"),
    pytest.param("tests.apps.plain:asgi_app", "uvicorn", id="uvicorn"),
    pytest.param("tests.apps.plain:wsgi_app", "granian", id="granian"),
])
def test_several_workers_leave_no_metrics_directory_behind(target: str, server: str, tmp_path: Path) -> None:
    with serving(target, server, args=["--workers", "2"], tmp_dir=tmp_path) as served:
        assert httpx.get(f"{served.url}/m", timeout=20).text == "hello /m"
        (directory,) = tmp_path.glob("scalekit-metrics-*")
        assert any(directory.iterdir())  # the workers' metric files are there while it runs
    wait_until(lambda: not list(tmp_path.glob("scalekit-metrics-*")),
               what="the multiprocess metrics directory to be removed after the server stopped")


def test_a_metrics_directory_scalekit_did_not_create_is_kept(tmp_path: Path) -> None:
    plan = cli.plan_serve("m:app", kind="wsgi", workers=2, environ={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert plan.cleanup_dirs == ()
    made = cli.plan_serve("m:app", kind="wsgi", workers=2, environ={})
    try:
        assert made.cleanup_dirs == (made.env["PROMETHEUS_MULTIPROC_DIR"],)
    finally:
        shutil.rmtree(made.env["PROMETHEUS_MULTIPROC_DIR"])


# The served apps of tests/realapps check the warning is said once under each server.
ALLOWED_HOSTS_WARNING = "allowed_hosts is '*'"


def test_a_flask_cli_command_says_nothing_about_allowed_hosts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FLASK_APP": "tests.apps.factories:create_flask_app"}
    result = subprocess.run([sys.executable, "-m", "flask", "routes"], env=env, cwd=tmp_path, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "/hello" in result.stdout
    assert ALLOWED_HOSTS_WARNING not in result.stdout + result.stderr


# --------------------------------------------------------------------------- the framework's own settings


def test_serve_installs_a_flask_app_with_its_config_and_route_labels(tmp_path: Path) -> None:
    from flask import Flask
    from werkzeug.test import Client

    from tests.adapters.support import exposition_text, route_labels

    app = Flask("served_flask")
    app.config["SCALEKIT"] = {"state_dir": str(tmp_path), "cache": {"status_name": "flask-config",
                                                                     "rules": [{"path": "/p/*"}]}}

    @app.get("/p/<int:number>")
    def page(number: int) -> str:
        return f"page {number}"

    served = cli.wrap_served_app(app, kind="wsgi")
    try:
        assert served is app and app.extensions["scalekit"] is not None
        client = Client(served)
        client.get("/p/1").close()
        second = client.get("/p/1")
        second.close()  # a WSGI response is counted once the server has closed it
        assert second.headers["Cache-Status"].startswith("flask-config; hit")
        assert "/p/<int:number>" in route_labels(exposition_text())
    finally:
        app.extensions["scalekit"].close()


def test_serve_gives_a_starlette_app_its_route_labels(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tests.adapters.support import exposition_text, route_labels

    async def thing(request: object) -> PlainTextResponse:
        return PlainTextResponse("thing")

    class ShopApp(Starlette):  # an app class of its own: its base says what framework it is
        pass

    app = ShopApp(routes=[Route("/things/{name}", thing)])
    served = cli.wrap_served_app(app, kind="asgi")
    try:
        with TestClient(served) as client:
            assert client.get("/things/spoon").text == "thing"
        assert "/things/{name}" in route_labels(exposition_text())
    finally:
        served.runtime.close()


def test_a_server_that_cannot_start_leaves_no_metrics_directory(tmp_path: Path) -> None:
    script = (
        "import importlib.util, click\n"
        "from scalekit import cli\n"
        "plan = cli.plan_serve('m:app', kind='wsgi', workers=2, environ={})\n"
        "print(plan.env['PROMETHEUS_MULTIPROC_DIR'], flush=True)\n"
        "importlib.util.find_spec = lambda name: None  # as if gunicorn were not installed\n"
        "try:\n"
        "    cli.exec_server(plan)\n"
        "except click.ClickException as exc:\n"
        "    print(exc.message)\n")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    directory, message = result.stdout.splitlines()
    assert Path(directory).parent == tmp_path and "gunicorn is not installed" in message
    wait_until(lambda: not Path(directory).exists(), what="the directory of a server that never started")
