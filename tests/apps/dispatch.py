"""One server, three variants: the request header ``X-Variant`` picks the bare app, the app
wrapped with only metrics (``off``: cdn/cache/pool off) or wrapped with every default layer.

Comparing variants inside one server process keeps the real-server tests fast (one start) and
fair (same server, same settings). The dispatchers themselves only pick; they touch nothing.
"""

from __future__ import annotations

import os
from typing import Any

from . import flask_app, starlette_app

FLASK = {"bare": flask_app.app, "off": flask_app.wrapped_off, "defaults": flask_app.wrapped_defaults}
STARLETTE = {"bare": starlette_app.app, "off": starlette_app.wrapped_off,
             "defaults": starlette_app.wrapped_defaults}  # built at import: a server fails fast


def flask_variants(environ: dict[str, Any], start_response: Any) -> Any:
    return FLASK[environ.get("HTTP_X_VARIANT", "bare")](environ, start_response)


async def starlette_variants(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        # The "off" variant forwards lifespan to the app with scalekit's hooks around it.
        await starlette_app.wrapped_off(scope, receive, send)
        return
    variant = dict(scope.get("headers", ())).get(b"x-variant", b"bare").decode()
    await STARLETTE[variant](scope, receive, send)


if os.environ.get("TEST_LIFESPAN_EVENTS_FILE"):
    starlette_app.EVENTS_FILE = os.environ["TEST_LIFESPAN_EVENTS_FILE"]
