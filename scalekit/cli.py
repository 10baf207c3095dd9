"""The ``scalekit`` command line: ``serve``, ``check``, ``demo``, and each layer's commands.

``scalekit serve MODULE:APP`` wraps the app and runs it under gunicorn (WSGI) or uvicorn (ASGI),
or granian (``--server granian``, either kind) (what it runs is :mod:`scalekit.serving`);
``scalekit check`` validates the configuration and says which backends answer; ``scalekit
demo`` serves a small shop on embedded defaults. A layer package may ship
``scalekit/<layer>/commands.py`` with ``COMMANDS: list[click.Command]`` (added here as
subcommands) and ``check(config) -> list[(component, reachable, detail)]`` (run by ``check``).

>>> from click.testing import CliRunner
>>> CliRunner().invoke(main, ["--help"]).exit_code
0
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import click

from .config import Config
from .errors import ConfigError, MissingExtraError
from .extras import check_config_extras, require_extras
from .serving import (
    SERVE_APP_ENV,
    SERVE_FACTORY_ENV,
    SERVE_KIND_ENV,
    SERVERS,
    ServePlan,
    exec_server,
    import_target,
    kind_of,
    load_served_app,
    plan_serve,
    wrap_served_app,
)
from .settings_report import SettingsReport, load_report, summary_lines

# What serve runs lives in scalekit.serving; its names stay importable from here.
__all__ = [
    "SERVE_APP_ENV",
    "SERVE_FACTORY_ENV",
    "SERVE_KIND_ENV",
    "ServePlan",
    "exec_server",
    "import_target",
    "load_served_app",
    "main",
    "plan_serve",
    "wrap_served_app",
]

FRAMEWORKS = ("builtin", "flask", "fastapi", "django")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scalekit")
def main() -> None:
    """scalekit: metrics, CDN headers, a fleet cache and pooled connections for any WSGI or
    ASGI app. Configuration: keyword arguments > SCALEKIT_* environment > scalekit.toml (or
    [tool.scalekit] in pyproject.toml) > defaults."""


def _validated_config() -> Config:
    return _validated_report(None, False, django=False).config


def _validated_report(target: str | None, factory: bool, *, django: bool = True) -> SettingsReport:
    """The configuration and its origins, or exit 2 with one line naming what is wrong."""
    try:
        report = load_report(target, factory=factory, django=django)
        check_config_extras(report.config)
    except ConfigError as exc:
        click.echo(f"scalekit: configuration error: {exc}", err=True)
        sys.exit(2)
    except MissingExtraError as exc:
        _exit_missing(exc)
    return report


def _exit_missing(exc: MissingExtraError) -> NoReturn:
    click.echo(f"scalekit: {exc}", err=True)
    sys.exit(2)


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (metrics are merged over them).")
@click.option("--bind", "-b", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--kind", type=click.Choice(["wsgi", "asgi"]), help="Force the app kind (detected by default).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads per worker for WSGI apps (gunicorn threads, granian blocking threads).")
@click.option("--server", type=click.Choice(SERVERS), default="auto", show_default=True,
              help="auto: gunicorn for WSGI, uvicorn for ASGI; granian serves either, with less "
                   "overhead per request (pip install \"scalekit[granian]\"). WebSockets work "
                   "under uvicorn and granian (ASGI apps); WSGI has no WebSockets.")
@click.option("--factory", is_flag=True,
              help="MODULE:APP names a factory to call without arguments for the app, as with "
                   "uvicorn --factory; 'MODULE:create_app(...)' with literal arguments works too.")
def serve(target: str, workers: int, bind: str, kind: str | None, threads: int, server: str,
          factory: bool) -> None:
    """Wrap MODULE:APP with scalekit and serve it: gunicorn for WSGI, uvicorn for ASGI, or granian.

    MODULE:APP may call an app factory, as gunicorn and flask --app accept it:
    'flaskr:create_app()' or 'app:create_app("production", debug=False)'.
    """
    _validated_config()  # fail here, clearly, not in every worker
    app_kind = kind_of(import_target(target, factory=factory), kind)
    plan = plan_serve(target, kind=app_kind, workers=workers, bind=bind, threads=threads, server=server,
                      factory=factory)
    click.echo(f"scalekit: serving {target} ({app_kind}) with {plan.server}, {workers} worker(s), "
               f"at {plan.url}")
    exec_server(plan)


# --------------------------------------------------------------------------- check


def run_checks(config: Config) -> list[tuple[str, bool, str]]:
    """Every layer plugin's ``check(config)`` rows; a plugin that fails reports itself failed."""
    results: list[tuple[str, bool, str]] = []
    for layer, module in layer_plugins().items():
        check = getattr(module, "check", None) if module is not None else None
        if module is None:
            results.append((f"{layer} commands", False, _PLUGIN_ERRORS.get(layer, "failed to import")))
        elif check is not None:
            try:
                results.extend(check(config))
            except Exception as exc:  # noqa: BLE001  (one broken check must not hide the others)
                results.append((layer, False, f"check failed: {type(exc).__name__}: {exc}"))
    return results


@main.command()
@click.argument("target", metavar="[MODULE:APP]", required=False)
@click.option("--factory", is_flag=True, help="MODULE:APP names a factory to call without arguments.")
def check(target: str | None, factory: bool) -> None:
    """Validate the configuration, show each setting and where it came from, and try each backend.

    With MODULE:APP, the settings that app runs with (wrapped as scalekit serve would, so
    Django's settings.SCALEKIT, Flask's app.config["SCALEKIT"] and wrap() arguments count);
    without, scalekit.toml and SCALEKIT_* (and settings.SCALEKIT when DJANGO_SETTINGS_MODULE
    is set). Where two sources set a key differently, it says which one is used.

    Exit status: 0 all good, 1 a backend is unreachable, 2 the configuration is invalid.
    """
    report = _validated_report(target, factory)
    config = report.config
    click.echo("configuration: valid")
    for note in report.notes:
        click.echo(f"  {note}")
    for line in summary_lines(report):
        click.echo(line)
    results = run_checks(config)
    click.echo("backends:" if results else "backends: nothing to check")
    for name, reachable, detail in results:
        click.echo(f"  {'ok  ' if reachable else 'FAIL'}  {name}: {detail}")
    if any(not reachable for _, reachable, _ in results):
        sys.exit(1)


# --------------------------------------------------------------------------- demo


def find_example(framework: str, search: tuple[Path, ...] | None = None) -> Path | None:
    """``examples/<framework>_shop/app.py`` in the current directory or this checkout."""
    roots = search or (Path.cwd(), Path(__file__).resolve().parent.parent)
    for root in roots:
        candidate = root / "examples" / f"{framework}_shop" / "app.py"
        if candidate.is_file():
            return candidate
    return None


@main.command()
@click.option("--framework", type=click.Choice(FRAMEWORKS), default="builtin", show_default=True,
              help="builtin: a plain WSGI shop; the others run examples/<framework>_shop/app.py.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the shop's database, disk cache and built assets here between runs "
                   "(default: a new, empty temporary folder for each run).")
def demo(framework: str, port: int, host: str, state_dir: Path | None) -> None:
    """Serve a small shop wrapped with every enabled layer, on embedded defaults (SQLite,
    memory and disk cache; no Redis or Postgres needed)."""
    try:  # what `make demo FRAMEWORK=...` installs
        require_extras(["server"] if framework == "builtin" else ["demo", framework],
                       needed_for=f"the {framework} demo")
    except MissingExtraError as exc:
        _exit_missing(exc)
    # Each run starts empty, as the README's walkthrough does (a miss first, the seeded prices),
    # and one framework's demo never serves another's cached pages; nothing lands in the checkout.
    folder = str(state_dir) if state_dir else tempfile.mkdtemp(prefix=f"scalekit-demo-{framework}-")
    os.environ["SCALEKIT_STATE_DIR"] = folder  # read by the import below and by the server
    try:
        plan = _demo_plan(framework, host, port)
    except BaseException:
        if state_dir is None:  # nothing will serve from this run's folder: leave no trace
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if state_dir is None:  # a folder of this run only: removed once the server has exited
        plan = dataclasses.replace(plan, cleanup_dirs=(*plan.cleanup_dirs, folder))
    click.echo(f"scalekit demo ({framework}): {plan.url}  (metrics at {plan.url}metrics; state in "
               f"{folder}{'' if state_dir else ', removed at exit'}; Ctrl-C stops)")
    exec_server(plan)


def _demo_plan(framework: str, host: str, port: int) -> ServePlan:
    """How ``scalekit demo`` serves ``framework``'s shop, its configuration checked first."""
    _validated_config()
    if framework == "builtin":
        target = "scalekit.demo:app"
    else:
        example = find_example(framework)
        if example is None:
            raise click.ClickException(
                f"examples/{framework}_shop/app.py was not found here or in this scalekit checkout; "
                "run from a clone of the repository, or use --framework builtin.")
        os.chdir(example.parents[2])  # the checkout root, from which examples.<fw>_shop imports
        sys.path.insert(0, os.getcwd())
        module = f"examples.{framework}_shop.app"
        attribute = "app" if hasattr(importlib.import_module(module), "app") else "application"
        target = f"{module}:{attribute}"
    app_kind = kind_of(import_target(target), None)
    return plan_serve(target, kind=app_kind, bind=f"{host}:{port}", threads=4)


# --------------------------------------------------------------------------- plugins

_PLUGINS: dict[str, ModuleType | None] | None = None
_PLUGIN_ERRORS: dict[str, str] = {}


def layer_plugins() -> dict[str, ModuleType | None]:
    """``scalekit.<layer>.commands`` of every layer package that has one (None: failed import)."""
    global _PLUGINS
    if _PLUGINS is None:
        _PLUGINS = {}
        package = importlib.import_module("scalekit")
        for info in pkgutil.iter_modules(package.__path__):
            name = f"scalekit.{info.name}.commands"
            if not info.ispkg or importlib.util.find_spec(name) is None:
                continue
            try:
                _PLUGINS[info.name] = importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001  (the other commands must keep working)
                _PLUGINS[info.name] = None
                _PLUGIN_ERRORS[info.name] = f"cannot import {name}: {type(exc).__name__}: {exc}"
    return _PLUGINS


def _register_plugin_commands() -> None:
    for layer, module in layer_plugins().items():
        for command in getattr(module, "COMMANDS", ()) if module is not None else ():
            if command.name in main.commands:
                _PLUGIN_ERRORS[layer] = f"command {command.name!r} of {layer} clashes with another"
                continue
            main.add_command(command)


_register_plugin_commands()

if __name__ == "__main__":
    main()
