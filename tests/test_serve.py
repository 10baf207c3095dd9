"""``scalekit serve``: which targets it accepts (apps, factories) and what it leaves behind."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

import scalekit
from scalekit import cli
from tests.apps import factories, plain
from tests.realapps.support import serving


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
    assert cli._kind_of(app, None) == "wsgi"


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


@pytest.mark.server
@pytest.mark.parametrize("server", ["gunicorn", "granian"])
def test_a_factory_with_arguments_is_served(server: str) -> None:
    with serving("tests.apps.factories:create_app('bonjour')", server) as served:
        assert httpx.get(f"{served.url}/x", timeout=20).text == "bonjour /x"
