"""A scripted origin for the proxy's tests (plain ASGI, no scalekit): the query string sets the
response headers, the body says how often the origin ran for that path.

``cc`` Cache-Control, ``vary``, ``etag=1`` (answers If-None-Match with 304), ``cookie=1``,
``sleep=MS``, ``size=N``, ``status=N``, ``age`` (an upstream Age), ``cdn`` (CDN-Cache-Control),
``ranges=1`` (a single byte Range gets a 206); ``/__calls?path=P`` counts, ``POST /__fail?mode=500`` breaks GETs,
``/__echo`` returns the request it received (method, headers, body) as JSON.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from werkzeug.http import parse_range_header

calls: dict[str, int] = {}
failing = {"mode": ""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    path, method = scope["path"], scope["method"]
    params = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()}
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    if path == "/__calls":
        return await respond(send, 200, [], str(calls.get(params["path"], 0)).encode())
    if path == "/__fail":
        failing["mode"] = params.get("mode", "")
        return await respond(send, 200, [], b"ok")
    if path == "/__echo":
        echo = {"method": method, "headers": headers, "body": body.decode(), "query": params}
        return await respond(send, 200, [("content-type", "application/json")], json.dumps(echo).encode())
    calls[path] = count = calls.get(path, 0) + 1
    if failing["mode"] == "500" and method == "GET":
        return await respond(send, 500, [], b"upstream broken")
    if "sleep" in params:
        await asyncio.sleep(int(params["sleep"]) / 1000)
    out = [("content-type", "text/plain")]
    for param, name in (("cc", "cache-control"), ("vary", "vary"), ("age", "age"), ("cdn", "cdn-cache-control")):
        if param in params:
            out.append((name, params[param]))
    if "cookie" in params:
        out.append(("set-cookie", f"session={count}"))
    vary_values = " ".join(f"{n.strip().lower()}={headers.get(n.strip().lower())}"
                           for n in params.get("vary", "").split(",") if n.strip())
    text = f"{method} {path} call={count} {vary_values}".strip().encode()
    if "size" in params:
        text = (text + b" " + b"x" * int(params["size"]))[: int(params["size"])]
    if "etag" in params:
        out.append(("etag", '"v1"'))
        if headers.get("if-none-match") == '"v1"':
            return await respond(send, 304, out, b"")
    span = parse_range_header(headers.get("range")) if "ranges" in params else None
    selected = span.range_for_length(len(text)) if span is not None and len(span.ranges) == 1 else None
    if selected is not None:
        start, stop = selected
        out.append(("content-range", f"bytes {start}-{stop - 1}/{len(text)}"))
        return await respond(send, 206, out, text[start:stop])
    return await respond(send, int(params.get("status", "200")), out, text)


async def respond(send: Any, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    if status != 304:
        headers = [*headers, ("content-length", str(len(body)))]
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})
