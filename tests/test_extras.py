"""A setting or command that needs an extra which is not installed stops at start-up with one
line naming the extra's install command: at wrap(), in ``scalekit serve``, ``check``, ``demo``
and ``assets build``. Here the absence is simulated (find_spec); tests/fresh checks the same in
real virtualenvs without those packages."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import scalekit
from scalekit import cli, extras
from scalekit.config import load_config
from scalekit.errors import MissingExtraError

REDIS = {"redis": {"url": "redis://127.0.0.1:6379/0"}}
POSTGRES = {"pool": {"databases": {"default": {"url": "postgresql://app@db/shop"}}}}


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``absent("redis", ...)``: find_spec answers None for those top-level modules."""
    def make_absent(*modules: str) -> None:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *args: None if name.split(".")[0] in modules else real(name, *args))
    return make_absent


def config(**settings: Any) -> scalekit.Config:
    return load_config(settings, environ={}, cwd="/nonexistent")


@pytest.mark.parametrize(("settings", "needed"), [
    pytest.param({}, [], id="defaults need nothing"),
    pytest.param(REDIS, ["redis"], id="redis.url"),
    pytest.param(POSTGRES, ["postgres"], id="a postgresql:// database"),
    pytest.param({"pool": {"databases": {"default": {"url": "postgresql+psycopg2://app@db/shop"}}}},
                 ["postgres"], id="psycopg2 named"),
    pytest.param({"pool": {"databases": {"default": {"url": "postgresql+psycopg://app@db/shop"}}}}, [],
                 id="another driver is the app's own"),
    pytest.param({**POSTGRES, "pool": {**POSTGRES["pool"], "enabled": False}}, [], id="pool off"),
    pytest.param({"cdn": {"assets_manifest": "/srv/manifest.json"}}, ["assets"], id="assets served in-app"),
    pytest.param({"cdn": {"assets_manifest": "/srv/manifest.json", "serve_assets": False}}, [],
                 id="assets served by nginx"),
])
def test_each_setting_names_the_extra_it_needs(settings: dict[str, Any], needed: list[str]) -> None:
    assert [extra for extra, _ in extras.needed_extras(config(**settings))] == needed


def test_wrap_raises_one_line_naming_the_install_command(absent: Callable[..., None]) -> None:
    absent("redis")
    with pytest.raises(MissingExtraError) as raised:
        scalekit.wrap(hello, **REDIS)
    message = str(raised.value)
    assert message == 'redis.url is set, but redis is not installed: pip install "scalekit[redis]"'
    assert "\n" not in message and raised.value.__cause__ is None and raised.value.extras == ("redis",)
    assert isinstance(raised.value, ImportError)


def test_every_missing_extra_is_named_in_one_command(absent: Callable[..., None]) -> None:
    absent("redis", "psycopg2")
    with pytest.raises(MissingExtraError, match=r'pip install "scalekit\[redis,postgres\]"$'):
        extras.check_config_extras(config(**REDIS, **POSTGRES))


def test_installed_extras_pass() -> None:
    extras.check_config_extras(config(**REDIS, **POSTGRES))  # this environment has every extra


@pytest.mark.parametrize("command", [["check"], ["serve", "tests.apps.plain:wsgi_app"], ["demo"]])
def test_commands_print_one_line_and_exit_2(command: list[str], absent: Callable[..., None],
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    absent("redis")
    monkeypatch.setenv("SCALEKIT_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SCALEKIT_STATE_DIR", os.environ["SCALEKIT_STATE_DIR"])  # the demo sets its own
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the demo makes its state folder
    monkeypatch.setattr(cli, "exec_server", lambda plan: pytest.fail("nothing may start"))
    result = CliRunner().invoke(cli.main, command)
    assert result.exit_code == 2
    assert result.output == 'scalekit: redis.url is set, but redis is not installed: pip install "scalekit[redis]"\n'
    assert list(tmp_path.iterdir()) == []  # a demo that cannot start leaves no state folder behind


@pytest.mark.parametrize(("framework", "modules", "expected"), [
    pytest.param("fastapi", ("fastapi", "starlette"), 'the fastapi demo needs fastapi, starlette, which are not '
                 'installed: pip install "scalekit[demo,fastapi]"', id="the framework"),
    pytest.param("flask", ("servestatic",), 'the flask demo needs servestatic, which is not installed: '
                 'pip install "scalekit[demo,flask]"', id="the demo extra"),
    pytest.param("builtin", ("gunicorn",), 'the builtin demo needs gunicorn, which is not installed: '
                 'pip install "scalekit[server]"', id="the builtin shop needs a server only"),
])
def test_demo_names_what_make_demo_installs(framework: str, modules: tuple[str, ...], expected: str,
                                            absent: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    absent(*modules)
    monkeypatch.setattr(cli, "exec_server", lambda plan: pytest.fail("nothing may start"))
    result = CliRunner().invoke(cli.main, ["demo", "--framework", framework])
    assert (result.exit_code, result.output) == (2, f"scalekit: {expected}\n")


def test_serve_names_the_server_extra(absent: Callable[..., None]) -> None:
    absent("gunicorn")
    plan = cli.plan_serve("tests.apps.plain:wsgi_app", kind="wsgi")
    with pytest.raises(click.ClickException) as raised:
        cli.exec_server(plan)
    assert raised.value.message == 'gunicorn is not installed: pip install "scalekit[server]"'


def test_assets_build_without_servestatic(absent: Callable[..., None], tmp_path: Path) -> None:
    absent("servestatic")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.css").write_text("body {}")
    result = CliRunner().invoke(cli.main, ["assets", "build", str(tmp_path / "src"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().endswith('pip install "scalekit[assets]"') and len(result.output.splitlines()) == 1
    assert CliRunner().invoke(cli.main, ["assets", "build", "--no-compress", str(tmp_path / "src"),
                                         str(tmp_path / "out")]).exit_code == 0
