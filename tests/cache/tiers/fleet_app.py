"""The app the fleet tests run in several real servers: items whose version lives in a file.

``GET /item/N`` answers ``item=N;version=V`` where V is read from ``$FLEET_VERSION_FILE`` at
origin time, cacheable for 300 s and tagged ``item:N`` and ``items``. The test bumps the file
and purges a tag; a response showing an old version after the purge would be a stale serve.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .servers import answer_lifespan, wrapped_on_demand


def _origin(path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    if not path.startswith("/item/"):
        return 404, [("content-type", "text/plain")], b"not found"
    item = path.rsplit("/", 1)[1]
    version = Path(os.environ["FLEET_VERSION_FILE"]).read_text().strip()
    body = f"item={item};version={version}".encode()
    return 200, [("content-type", "text/plain"), ("content-length", str(len(body))),
                 ("cache-control", "public, max-age=300"),
                 ("surrogate-key", f"item:{item} items")], body


def wsgi_origin(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status, headers, body = _origin(environ.get("PATH_INFO", "/"))
    start_response(f"{status} {'OK' if status == 200 else 'Not Found'}", headers)
    return [body]


async def asgi_origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    status, headers, body = _origin(scope["path"])
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


# ``wsgi_app`` / ``asgi_app``, wrapped when a server imports one of them.
__getattr__ = wrapped_on_demand(globals(), {"wsgi_app": wsgi_origin, "asgi_app": asgi_origin},
                                cdn=False, pool=False)
