"""What ``scalekit serve`` runs: the app it names, wrapped as its framework would, under a server.

- :func:`import_target` finds ``MODULE:APP``, calling an app factory when the target says so
  (``flaskr:create_app()``, literal arguments allowed, or ``--factory``);
- :func:`wrap_served_app` wraps an app that has no scalekit yet through its framework's
  adapter, so the framework's own settings (``settings.SCALEKIT``, ``app.config["SCALEKIT"]``)
  apply however the app is served; :func:`load_served_app` is what each server process calls;
- :func:`plan_serve` builds the server command (gunicorn, uvicorn or granian) and
  :func:`exec_server` replaces this process with it, leaving a small remover that deletes the
  multiprocess metrics directory it made once the server and its workers have exited.

>>> plan_serve("app:app", kind="asgi", bind="127.0.0.1:9000", environ={}).argv[1:3]
['-m', 'uvicorn']
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import click

from .errors import MissingExtraError, WrapError

__all__ = [
    "SERVERS",
    "SERVE_APP_ENV",
    "SERVE_FACTORY_ENV",
    "SERVE_KIND_ENV",
    "ServePlan",
    "exec_server",
    "import_target",
    "is_wrapped",
    "kind_of",
    "load_served_app",
    "plan_serve",
    "wrap_served_app",
]

SERVE_APP_ENV = "SCALEKIT_SERVE_APP"
SERVE_KIND_ENV = "SCALEKIT_SERVE_KIND"
SERVE_FACTORY_ENV = "SCALEKIT_SERVE_FACTORY"  # "1": the target is a factory to call (--factory)

# --------------------------------------------------------------------------- importing apps


def import_target(target: str, *, factory: bool = False) -> Any:
    """The app named by ``"package.module:attribute"``, importing from the current directory
    like gunicorn and uvicorn do.

    The attribute may be dotted, and may be a call of an app factory with literal arguments as
    gunicorn and ``flask --app`` accept (``flaskr:create_app()``,
    ``app:create_app('production', debug=False)``); ``factory=True`` calls it without
    arguments, as ``uvicorn --factory`` does. Without an attribute, ``app`` is served, else
    ``application`` (Django's name).
    """
    module_name, _, attribute = target.partition(":")
    if not module_name:
        raise click.BadParameter(f"{target!r} is not MODULE:APP (e.g. myproject.wsgi:app)")
    expression = attribute.strip()
    path, arguments = _parse_attribute(expression) if expression else ([], None)
    if factory and arguments is not None:
        raise click.BadParameter(f"{expression!r} already calls the factory, and --factory would "
                                 f"call what it returns; use one: '{module_name}:{path[-1]}' "
                                 "with --factory, or the call without it.", param_hint="--factory")
    module = _import_module(module_name)
    if not path:
        path = ["application"] if not hasattr(module, "app") and hasattr(module, "application") else ["app"]
    value: Any = module
    for part in path:
        if not hasattr(value, part):
            names = sorted(name for name in vars(module) if not name.startswith("_"))
            raise click.ClickException(f"{module_name!r} has no attribute {'.'.join(path)!r}; "
                                       f"it defines: {', '.join(names[:20])}")
        value = getattr(value, part)
    if factory:
        return _call_factory(value, f"{'.'.join(path)}()", ((), {}),
                             hint=f" (--factory calls it; if {path[-1]} is the app itself, drop --factory)")
    if arguments is not None:
        value = _call_factory(value, expression, arguments)
    return value


_ATTRIBUTE_HELP = ("an attribute name (app, api.app) or a call of one with literal arguments "
                   "(create_app(), create_app('production', debug=False))")


def _parse_attribute(expression: str) -> tuple[list[str], tuple[tuple[Any, ...], dict[str, Any]] | None]:
    """``"a.b"`` -> (["a", "b"], None); ``"f(1, x=2)"`` -> (["f"], ((1,), {"x": 2}))."""
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise click.BadParameter(f"{expression!r} is not {_ATTRIBUTE_HELP}.",
                                 param_hint="MODULE:APP") from None
    arguments: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    if isinstance(node, ast.Call):
        if any(keyword.arg is None for keyword in node.keywords) or any(
                isinstance(arg, ast.Starred) for arg in node.args):
            raise click.BadParameter(f"{expression!r}: *args and **kwargs are not accepted; "
                                     "write the literal arguments out.", param_hint="MODULE:APP")
        try:
            arguments = (tuple(ast.literal_eval(arg) for arg in node.args),
                         {str(k.arg): ast.literal_eval(k.value) for k in node.keywords})
        except ValueError:
            raise click.BadParameter(f"the arguments of {expression!r} must be literal values "
                                     "(strings, numbers, True/False/None, lists, dicts), as "
                                     "gunicorn accepts them.", param_hint="MODULE:APP") from None
        node = node.func
    path: list[str] = []
    while isinstance(node, ast.Attribute):
        path.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise click.BadParameter(f"{expression!r} is not {_ATTRIBUTE_HELP}.", param_hint="MODULE:APP")
    return [node.id, *path], arguments


def _import_module(module_name: str) -> ModuleType:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.ClickException(
                f"cannot import {module_name!r} ({exc}); run from the folder that contains it, or "
                "add that folder to PYTHONPATH.") from None
        raise


def _call_factory(factory: Any, shown: str, arguments: tuple[tuple[Any, ...], dict[str, Any]],
                  hint: str = "") -> Any:
    """Call an app factory; wrong arguments and a None result are the caller's error, not a
    traceback. An exception inside the factory is the app's own and propagates as it is."""
    args, kwargs = arguments
    if not callable(factory):
        raise click.ClickException(f"{shown}{hint}: {factory!r} is not callable, so it is no "
                                   "factory; name the app without parentheses or --factory.")
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: the call itself will say
        signature = None
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise click.ClickException(f"cannot call {shown}{hint}: {exc}.") from None
    app = factory(*args, **kwargs)
    if app is None:
        raise click.ClickException(f"{shown} returned None; an app factory must return the app.")
    return app


def load_served_app() -> Any:
    """Factory the server processes of ``scalekit serve`` call: import and wrap the app.

    It reads ``SCALEKIT_SERVE_APP`` / ``SCALEKIT_SERVE_KIND``; an app already wrapped with
    :func:`scalekit.wrap` is served as it is.
    """
    app = import_target(os.environ[SERVE_APP_ENV], factory=bool(os.environ.get(SERVE_FACTORY_ENV)))
    kind = os.environ.get(SERVE_KIND_ENV) or None
    return app if is_wrapped(app) else wrap_served_app(app, kind=kind)


# The adapter that wraps an app of each framework (by the top package of its class) as
# its users configure it: Django from settings.SCALEKIT, Flask from app.config["SCALEKIT"],
# and both with route labels, so `scalekit serve` honours the same settings as the app's own
# install would, and one configuration wins however the app is served.
_FRAMEWORK_WRAPPERS = {
    "django": "scalekit_django.handlers:wrap",
    "flask": "scalekit_flask.extension:install",
    "starlette": "scalekit_fastapi.middleware:wrap",
    "fastapi": "scalekit_fastapi.middleware:wrap",
}


def wrap_served_app(app: Any, *, kind: str | None = None) -> Any:
    """Wrap an app that is not wrapped yet, as ``scalekit serve`` does in each server process:
    through its framework's adapter when there is one, else with :func:`scalekit.wrap`."""
    from .pipeline import wrap

    # The app's class or a base of it (an app class subclassing Starlette or Flask).
    wrapper = next((_FRAMEWORK_WRAPPERS[top] for cls in type(app).__mro__
                    if (top := cls.__module__.partition(".")[0]) in _FRAMEWORK_WRAPPERS), None)
    if wrapper is None or kind not in (None, kind_of(app, None)):
        return wrap(app, kind=kind)  # type: ignore[arg-type]
    module_name, _, function = wrapper.partition(":")
    return getattr(importlib.import_module(module_name), function)(app)


def is_wrapped(app: Any) -> bool:
    """True for an app scalekit already wraps (itself, or inside its framework's app)."""
    from .asgi import ASGIRoot
    from .wsgi import WSGIRoot

    if isinstance(app, (WSGIRoot, ASGIRoot)) or getattr(app, "scalekit_installed", False):
        return True  # the marker: Flask's ScaleKit(app) wraps app.wsgi_app inside the Flask app
    # Starlette's app.add_middleware(ScaleKitMiddleware): the class carries the marker.
    return any(getattr(getattr(entry, "cls", None), "scalekit_installed", False)
               for entry in getattr(app, "user_middleware", None) or ())


def kind_of(app: Any, forced: str | None) -> str:
    from .asgi import ASGIRoot
    from .pipeline import detect_kind
    from .wsgi import WSGIRoot

    if isinstance(app, (WSGIRoot, ASGIRoot)):
        return "asgi" if isinstance(app, ASGIRoot) else "wsgi"
    if forced:
        return forced
    try:
        return detect_kind(app)
    except WrapError as exc:
        raise click.ClickException(f"{exc}{_factory_hint(app)}") from None


def _factory_hint(app: Any) -> str:
    """A callable that takes no arguments is an app factory named without its call."""
    try:
        inspect.signature(app).bind()
    except (TypeError, ValueError):
        return ""
    name = getattr(app, "__name__", "create_app")
    return (f" {name} looks like an app factory: serve 'MODULE:{name}()' (arguments allowed, as "
            "gunicorn accepts them) or pass --factory.")


# --------------------------------------------------------------------------- the server command


@dataclass(frozen=True)
class ServePlan:
    """The server command ``serve`` runs: argv, environment, and the URL it will answer on."""

    server: str
    argv: list[str]
    env: dict[str, str]
    url: str
    # Directories serve made for this run (the multiprocess metrics one), removed once the
    # server and every worker have exited.
    cleanup_dirs: tuple[str, ...] = ()


SERVERS = ("auto", "gunicorn", "uvicorn", "granian")
_SERVER_KINDS = {"gunicorn": ("wsgi",), "uvicorn": ("asgi",), "granian": ("wsgi", "asgi")}


def plan_serve(target: str, *, kind: str, workers: int = 1, bind: str = "127.0.0.1:8000",
               threads: int = 1, server: str = "auto", environ: dict[str, str] | None = None,
               factory: bool = False) -> ServePlan:
    """Build the server command for ``target``: gunicorn (WSGI) or uvicorn (ASGI) by default,
    or granian (either kind); pure, no I/O except creating the metrics directory for several
    workers."""
    if server == "auto":
        server = "gunicorn" if kind == "wsgi" else "uvicorn"
    if kind not in _SERVER_KINDS.get(server, ()):
        accepted = [name for name, kinds in _SERVER_KINDS.items() if kind in kinds]
        raise click.BadParameter(f"{server} does not serve {kind.upper()} apps; use one of {accepted}",
                                 param_hint="--server")
    host, port = _split_bind(bind)
    env = dict(os.environ if environ is None else environ)
    env[SERVE_APP_ENV], env[SERVE_KIND_ENV] = target, kind
    if factory:
        env[SERVE_FACTORY_ENV] = "1"
    else:
        env.pop(SERVE_FACTORY_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH")) if p)
    cleanup_dirs: tuple[str, ...] = ()
    if workers > 1 and not env.get("PROMETHEUS_MULTIPROC_DIR"):
        # One /metrics for all workers: prometheus_client's multiprocess mode needs a directory.
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="scalekit-metrics-")
        cleanup_dirs = (env["PROMETHEUS_MULTIPROC_DIR"],)
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}/"
    if server == "gunicorn":
        argv = [sys.executable, "-m", "gunicorn", "scalekit.serving:load_served_app()",
                "--config", "python:scalekit.gunicorn_conf", "--bind", bind,
                "--workers", str(workers), "--threads", str(threads)]
    elif server == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", "scalekit.serving:load_served_app", "--factory",
                "--host", host, "--port", str(port), "--workers", str(workers)]
    else:
        # granian: a Rust HTTP server; WSGI apps run on its blocking threads. WSGI has no
        # WebSockets, so there an upgrade request reaches the app as plain HTTP; ASGI apps get
        # granian's WebSockets (its default) as they do uvicorn's.
        argv = [sys.executable, "-m", "granian", "scalekit.serving:load_served_app", "--factory",
                "--interface", kind, "--host", host, "--port", str(port), "--workers", str(workers)]
        if kind == "wsgi":
            argv += ["--no-ws", "--blocking-threads", str(threads)]
    return ServePlan(server, argv, env, url, cleanup_dirs)


def _split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{bind!r} is not HOST:PORT (e.g. 127.0.0.1:8000 or [::1]:8000)",
                                 param_hint="--bind")
    return host, int(port)


def exec_server(plan: ServePlan) -> None:
    """Replace this process with the server (signals then reach it directly)."""
    if plan.cleanup_dirs:  # first: if anything below fails, this process's exit cleans up
        _remove_after_exit(plan.cleanup_dirs)
    if importlib.util.find_spec(plan.server) is None:
        extra = "granian" if plan.server == "granian" else "server"
        raise click.ClickException(str(MissingExtraError(f"{plan.server} is not installed", extras=(extra,))))
    directory = plan.env.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and plan.server != "gunicorn":
        # gunicorn empties it in its on_starting hook; the others have no such hook, and metric
        # files of an earlier run would be added into this one's sums.
        from .gunicorn_conf import prepare_multiprocess_dir

        prepare_multiprocess_dir(directory)
    sys.stdout.flush()
    os.execvpe(plan.argv[0], plan.argv, plan.env)


# Waits for end-of-file on the pipe, then removes the directories. Every process of the server
# holds the write end (inherited through exec and fork), so the end of file comes when the
# last of them has exited, however it exits (signal, crash, SIGKILL).
_REMOVER = ("import os, shutil, sys\n"
            "while os.read(int(sys.argv[1]), 512): pass\n"
            "for path in sys.argv[2:]: shutil.rmtree(path, ignore_errors=True)\n")


def _remove_after_exit(directories: tuple[str, ...]) -> None:
    """Start a small process that removes ``directories`` once this process (soon the server
    exec'd here) and every process it forks have exited. The server replaces this process, so nothing
    of this one can run after it; the remover is in its own session, so a Ctrl-C or a signal
    to the server's process group does not stop it before it has cleaned up."""
    read_end, write_end = os.pipe()
    subprocess.Popen([sys.executable, "-c", _REMOVER, str(read_end), *directories],
                     pass_fds=(read_end,), start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(read_end)
    os.set_inheritable(write_end, True)  # kept open across exec: closed when the server is gone
