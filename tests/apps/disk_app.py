"""A WSGI app for the shared disk tier under real gunicorn: every path is a cacheable 1 KB page.

The disk tier lives under ``$DISK_APP_STATE`` (one file every worker shares); ``/pid`` says which
worker answered.
"""

from __future__ import annotations

import os
from typing import Any

import scalekit


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    body = str(os.getpid()).encode() if path == "/pid" else path.encode().ljust(1000, b".")
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store" if path == "/pid" else "max-age=600")]
    start_response("200 OK", headers)
    return [body]


wrapped = scalekit.wrap(app, cdn=False, pool=False, allowed_hosts=["127.0.0.1"],
                        state_dir=os.environ.get("DISK_APP_STATE", "."))
