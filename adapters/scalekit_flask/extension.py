"""The Flask extension: ``ScaleKit(app)`` wraps ``app.wsgi_app`` and adds Flask's own glue.

Everything that decides anything (caching, CDN headers, pooling, metrics) is the scalekit
pipeline around ``app.wsgi_app``; this module only tells it what Flask knows: the URL rule that
matched (the metrics route label), and when Flask is done with the request (teardown), so the
pooled connection goes back even when an error handler produced the response.

>>> from flask import Flask
>>> app = Flask(__name__)
>>> scalekit_ext = ScaleKit(app, cache=False)  # app stays a Flask app
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, request

import scalekit
import scalekit.pool
from scalekit.context import CONTEXT_KEY

__all__ = ["EXTENSION_KEY", "ScaleKit", "install"]

# app.extensions[EXTENSION_KEY] is the ScaleKit instance, as Flask extensions conventionally do.
EXTENSION_KEY = "scalekit"
# Flask's config key holding a dict of scalekit settings (like SCALEKIT = {...} in Django).
CONFIG_KEY = "SCALEKIT"
DATABASES_KEY = "scalekit.databases"
DEFAULT_DATABASE_KEY = "scalekit.db"


class ScaleKit:
    """Wraps a Flask app's ``wsgi_app`` with scalekit; ``init_app`` for app factories.

    Settings: keyword arguments > ``app.config["SCALEKIT"]`` (a dict) > ``SCALEKIT_*`` env >
    ``scalekit.toml`` > defaults. The Flask object itself is unchanged, so ``app.run``,
    ``app.test_client()`` and ``flask --app`` keep working and go through the pipeline.
    """

    def __init__(self, app: Flask | None = None, **settings: Any) -> None:
        self.settings = settings
        self.runtime: scalekit.Runtime | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **settings: Any) -> None:
        """Install scalekit on ``app`` (once per app; a second call is an error, not a double wrap)."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(f"scalekit is already installed on Flask app {app.name!r}; call "
                               "ScaleKit(app) or init_app(app) once per app.")
        from_config: Mapping[str, Any] = app.config.get(CONFIG_KEY) or {}
        arguments = {**self.settings, **settings}
        # Two sources merged key by key: an argument changes its own key alone, and a
        # disagreement with app.config is said when the app starts serving.
        wrapped = scalekit.wrap(app.wsgi_app, kind="wsgi", settings_source="ScaleKit() arguments",
                                framework_settings=(f"app.config[{CONFIG_KEY!r}]", from_config), **arguments)
        app.wsgi_app = wrapped  # type: ignore[method-assign]
        self.runtime = wrapped.runtime
        app.extensions[EXTENSION_KEY] = self
        # Tells `scalekit serve` (and anything else that would wrap the app) it already is.
        app.scalekit_installed = True  # type: ignore[attr-defined]
        # First of the app-level before_request functions, so a later one that answers early
        # (auth, maintenance mode) is still counted under its route.
        app.before_request_funcs.setdefault(None, []).insert(0, _name_route)
        app.teardown_request(_return_connections)
        app.after_request(_release_whole_body_early)

    def close(self) -> None:
        """Stop what the layers started (pools, listeners); for tests and app shutdown."""
        if self.runtime is not None:
            self.runtime.close()


def install(app: Flask) -> Flask:
    """``ScaleKit(app)``, returning the app: what ``scalekit serve`` does to a Flask app it is
    given without scalekit, so ``app.config["SCALEKIT"]`` and the route labels apply there too."""
    ScaleKit(app)
    return app


def _name_route() -> None:
    """Label the request with the URL rule that matched (``/products/<int:product_id>``)."""
    rule = request.url_rule
    ctx = request.environ.get(CONTEXT_KEY)
    if ctx is not None and rule is not None:
        ctx.route = rule.rule
    database = request.environ.get(DEFAULT_DATABASE_KEY)
    if database is not None:
        g.scalekit_db = database  # the lazy handle: nothing is checked out until used


def _release_whole_body_early(response: Response) -> Response:
    """A body Flask holds whole (not streamed) needs no pooled connection while the server
    sends it: they go back when Flask is done (after teardown), before a slow client reads."""
    if not response.is_streamed and DATABASES_KEY in request.environ:
        scalekit.pool.release_at_response_start()
    return response


def _return_connections(exc: BaseException | None) -> None:
    """After a failed request, roll back and return its pooled connections at once.

    Teardown runs after Flask's error handlers, so the error page has been rendered by then;
    handing the connection back here means a failing route never holds it while the server
    sends the page, and its half-done transaction is rolled back, never committed. A request
    that succeeded gives it back when Flask returns if its body is whole, else (a streamed
    body may still be reading from it) once the server has sent the whole response.
    """
    if exc is None:
        return
    databases: Mapping[str, Any] | None = request.environ.get(DATABASES_KEY)
    for database in (databases or {}).values():
        release = getattr(database, "release", None)
        if release is not None:
            with contextlib.suppress(Exception):  # teardown must never raise over the response
                release()
