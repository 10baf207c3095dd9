"""The pool test apps for real servers, configured by environment (set by test_servers.py).

``SK_POOL_URL`` / ``SK_POOL_TABLE`` pick the database; ``SK_POOL_WARM=1`` runs one request at
import, so under ``gunicorn --preload`` the master holds a pooled connection before it forks.
``/backend`` answers "<backend pid now> <backend pid of the warm-up>".
"""

from __future__ import annotations

import os
from typing import Any

import scalekit
from scalekit.pool import db

from .apps import make_asgi_app, make_wsgi_app

URL = os.environ.get("SK_POOL_URL", "sqlite://")
TABLE = os.environ.get("SK_POOL_TABLE", "missing")
POOL = {"databases": {"default": {"url": URL, "pool_size": 3, "max_overflow": 2}}}
WARM_BACKEND = "none"

_wsgi_shop = make_wsgi_app(TABLE)


def _wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/backend":
        pid = db().connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        start_response("200 OK", [("content-type", "text/plain")])
        return [f"{pid} {WARM_BACKEND}".encode()]
    return _wsgi_shop(environ, start_response)


wsgi_app = scalekit.wrap(_wsgi, cache=False, cdn=False, pool=POOL)
asgi_app = scalekit.wrap(make_asgi_app(TABLE), cache=False, cdn=False, pool=POOL)

if os.environ.get("SK_POOL_WARM") == "1":
    def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return lambda data: None

    body = wsgi_app({"REQUEST_METHOD": "GET", "PATH_INFO": "/backend", "SERVER_NAME": "warm",
                     "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "warm"},
                    _start_response)
    WARM_BACKEND = b"".join(body).decode().split()[0]
    getattr(body, "close", lambda: None)()  # PEP 3333: close() if the body has one
