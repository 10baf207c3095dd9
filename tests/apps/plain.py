"""Plain PEP 3333 and ASGI 3 apps, bare and wrapped, for driver and real-server tests."""

from __future__ import annotations

from typing import Any

import scalekit


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers ``hello <path>`` as text/plain."""
    body = f"hello {environ.get('PATH_INFO', '')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``hello <path>`` as text/plain; lifespan is acknowledged."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"hello {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


wrapped_wsgi_app = scalekit.wrap(wsgi_app, cdn=False, cache=False, pool=False)
wrapped_asgi_app = scalekit.wrap(asgi_app, cdn=False, cache=False, pool=False)
