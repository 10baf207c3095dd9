"""``wrap()``: detect the app's kind, load the config, and build the layer pipeline around it.

Layers run outermost first in :data:`LAYER_ORDER`; a disabled layer is simply not in the
chain, so it costs nothing per request.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .asgi import ASGIRoot
from .cdn.purge import attach_edge_purges
from .config import Config, load_config_origins
from .errors import WrapError
from .extras import check_config_extras
from .provenance import Overridden, overridden_of
from .runtime import Runtime
from .wsgi import WSGIRoot

__all__ = ["LAYER_ORDER", "detect_kind", "wrap"]

log = logging.getLogger("scalekit")

# Outermost first: the request's span (tracing, off by default) holds everything, metrics
# sees every request (cache hits and shed requests included), CDN stamps what the cache
# serves, the cache answers before a pooled connection is ever lent.
LAYER_ORDER = ("tracing", "metrics", "cdn", "cache", "pool")
_LAYER_MODULES = {
    "tracing": "scalekit.tracing.layer",
    "metrics": "scalekit.metrics.layer",
    "cdn": "scalekit.cdn.layer",
    "cache": "scalekit.cache.layer",
    "pool": "scalekit.pool.layer",
}

Kind = Literal["wsgi", "asgi"]


def detect_kind(app: object) -> Kind:
    """``"asgi"`` for an ASGI 3 app (async, scope/receive/send), ``"wsgi"`` for a PEP 3333 app.

    Functions, bound methods, ``functools.partial`` objects, instances of classes with a
    ``__call__`` (Flask, Starlette, Django's handlers) and WSGI app classes are recognised.
    Raises :class:`WrapError` (a ``TypeError``) for anything else, saying what was received.

    >>> async def app(scope, receive, send): ...
    >>> detect_kind(app)
    'asgi'
    """
    if not callable(app):
        raise WrapError(f"scalekit.wrap() needs a WSGI or ASGI application; got {_describe(app)}, "
                        "which is not callable.")
    if isinstance(app, type):  # calling a class constructs it: only a WSGI app class fits
        if _accepts(app, 2):
            return "wsgi"
        raise WrapError(f"scalekit.wrap() got the class {app.__qualname__}, not an app; wrap an "
                        f"instance of it (e.g. {app.__name__}()), or the app object it builds.")
    if _is_async(app):
        if _accepts(app, 3):
            return "asgi"
        raise WrapError(
            f"scalekit.wrap() got an async callable that cannot be called with (scope, receive, "
            f"send): {_describe(app)}. An ASGI 3 app takes those three arguments; for an ASGI 2 "
            "app, wrap asgiref.compatibility.guarantee_single_callable(app).")
    if _accepts(app, 2):
        return "wsgi"
    raise WrapError(
        f"scalekit.wrap() got {_describe(app)}, a callable that cannot be called with (environ, "
        "start_response); accepted are a WSGI app (environ, start_response) and an ASGI 3 app "
        "(async scope, receive, send). If it is one of them behind a wrapper that hides its "
        "signature, pass kind='wsgi' or kind='asgi'.")


def _is_async(app: object) -> bool:
    if inspect.iscoroutinefunction(app):  # functions, methods, partials of them
        return True
    if inspect.isfunction(app) or inspect.ismethod(app) or isinstance(app, functools.partial):
        return False
    # An instance: its class's __call__ (Starlette, FastAPI, Django's ASGIHandler).
    return inspect.iscoroutinefunction(type(app).__call__)


def _accepts(app: Callable[..., Any], count: int) -> bool:
    """True if ``app`` can be called with ``count`` positional arguments (or we cannot tell)."""
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):  # builtins and C callables without a signature
        return True
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def _describe(app: object) -> str:
    text = repr(app)
    return f"{type(app).__name__} {text[:80]}"


def wrap(app: Any, *, kind: Kind | None = None, config: Config | None = None,
         settings_source: str = "arguments", framework_settings: tuple[str, Mapping[str, Any]] | None = None,
         **settings: Any) -> Any:
    """Wrap a WSGI or ASGI app with scalekit's layers; returns an app of the same kind.

    Settings come from ``settings`` (``cache={"enabled": False}``, ``metrics=False``), then
    ``framework_settings`` (an adapter's ``("settings.SCALEKIT", {...})``), then ``SCALEKIT_*``
    env, then ``scalekit.toml`` / ``[tool.scalekit]``, then defaults, merged key by key. A key
    set by several of them to different values is logged when the app starts serving, naming
    the value used; ``settings_source`` names ``settings`` there and in errors.

    >>> def hello(environ, start_response):
    ...     start_response("200 OK", [("Content-Type", "text/plain")])
    ...     return [b"hello"]
    >>> wrapped = wrap(hello, cache=False, cdn=False, pool=False)
    """
    if isinstance(app, (WSGIRoot, ASGIRoot)):
        raise WrapError(f"{app!r} is already wrapped by scalekit; wrap the original app once "
                        "(every layer would otherwise run twice).")
    if kind is None:
        kind = detect_kind(app)
    elif kind not in ("wsgi", "asgi"):
        raise WrapError(f"kind must be 'wsgi' or 'asgi'; got {kind!r}.")
    elif not callable(app):
        raise WrapError(f"scalekit.wrap() needs a WSGI or ASGI application; got {_describe(app)}, "
                        "which is not callable.")
    if config is not None:
        settings["config"] = config
    loaded, origins = load_config_origins(settings, source=settings_source, framework=framework_settings)
    check_config_extras(loaded)  # a missing extra: one line, before anything starts
    runtime = Runtime(loaded)
    runtime.origins = origins  # `scalekit check TARGET` shows where each setting came from
    # Said when the app starts serving, not when it is wrapped: a process that only imports
    # the app (a `flask` CLI command, `scalekit serve` choosing a server) serves nothing.
    runtime.on_startup(functools.partial(_warn_at_start, loaded, tuple(overridden_of(origins))))
    chain = app
    for name in reversed(LAYER_ORDER):
        if getattr(runtime.config, name).enabled:
            module = importlib.import_module(_LAYER_MODULES[name])
            chain = module.wrap_asgi(chain, runtime) if kind == "asgi" else module.wrap_wsgi(chain, runtime)
    attach_edge_purges(runtime)  # after the layers: the edge hears of invalidations after the cache
    if kind == "asgi":
        return ASGIRoot(app, chain, runtime)
    return WSGIRoot(app, chain, runtime)


_warned: set[str] = set()


def _warn_at_start(config: Config, overridden: tuple[Overridden, ...]) -> None:
    # Once per process: a test suite or a multi-app process wraps (and starts) many times.
    if "*" in config.allowed_hosts and "allowed_hosts" not in _warned:
        _warned.add("allowed_hosts")
        log.warning("scalekit: allowed_hosts is '*' (any Host is served, each in its own cache key "
                    "space); list your hosts in allowed_hosts for production.")
    for entry in overridden:
        message = entry.message()
        if message not in _warned:
            _warned.add(message)
            log.warning("scalekit: %s", message)
