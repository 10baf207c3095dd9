"""The app tests/cache/test_memory_bounds_served.py floods under a real server: 404 everywhere
but ``/page``, which a rule caches; any Host is served (each in its own key space)."""

from __future__ import annotations

from typing import Any

import scalekit


async def origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    found = scope["path"] == "/page"
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"page" if found else b"no"})


app = scalekit.wrap(origin, pool=False, allowed_hosts=["*"],
                    cache={"disk": {"enabled": False}, "rules": [{"path": "/page*", "ttl_seconds": 3600}]})
