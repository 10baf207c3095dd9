"""The app the fault suite serves: items whose version lives in a shared SQLite file.

``GET /item/N`` answers ``N=V``: V read from ``$FAULTS_DB`` at origin time, cacheable for 300 s
and tagged ``item:N``. ``POST /item/N`` or ``POST /write/N`` commits V+1, then invalidates
``item:N`` and answers JSON with the new version and what ``invalidate()`` said (reach,
acknowledged, the instances that had not applied it). A POST to /item/N also invalidates that
URI (an unsafe method); one to /write/N reaches the page only through its tag, as a form posted
elsewhere does. A read
showing a version below one whose write was acknowledged, or accepted by Redis longer ago
than the bound, is a stale read.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import closing
from typing import Any

import scalekit
from tests.cache.tiers.servers import answer_lifespan, wrapped_on_demand

_local = threading.local()


def _database() -> sqlite3.Connection:
    connection: sqlite3.Connection | None = getattr(_local, "connection", None)
    if connection is None or getattr(_local, "pid", 0) != os.getpid():
        connection = sqlite3.connect(os.environ["FAULTS_DB"], timeout=30.0, isolation_level=None)
        _local.connection, _local.pid = connection, os.getpid()
    return connection


def create_database(path: str, items: int) -> None:
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
        connection.executemany("INSERT INTO items VALUES (?, 0)", [(n,) for n in range(items)])


def _read(item: int) -> int:
    row = _database().execute("SELECT version FROM items WHERE id = ?", (item,)).fetchone()
    return int(row[0]) if row else -1


def _write(item: int) -> int:
    row = _database().execute(
        "UPDATE items SET version = version + 1 WHERE id = ? RETURNING version", (item,)).fetchone()
    return int(row[0])


def _item(path: str) -> int | None:
    prefix, _, number = path.rpartition("/")
    return int(number) if prefix in ("/item", "/write") and number.isdigit() else None


def _page(item: int) -> tuple[int, list[tuple[str, str]], bytes]:
    body = f"{item}={_read(item)}".encode()
    return 200, [("content-type", "text/plain"), ("content-length", str(len(body))),
                 ("cache-control", "public, max-age=300"), ("surrogate-key", f"item:{item}")], body


def _written(item: int, version: int, result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"item": item, "version": version, "reach": result.reach,
                       "acknowledged": result.acknowledged, "queued": result.queued,
                       "unacknowledged": list(result.unacknowledged), "pid": os.getpid()}).encode()
    return 200, [("content-type", "application/json"), ("content-length", str(len(body)))], body


def wsgi_origin(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    item = _item(environ.get("PATH_INFO", ""))
    if item is None:
        start_response("404 Not Found", [("content-type", "text/plain")])
        return [b"no such item"]
    if environ["REQUEST_METHOD"] == "POST":
        version = _write(item)
        status, headers, body = _written(item, version, scalekit.invalidate([f"item:{item}"]))
    else:
        status, headers, body = _page(item)
    start_response(f"{status} OK", headers)
    return [body]


async def asgi_origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    item = _item(scope["path"])
    if item is None:
        status, headers, body = 404, [("content-type", "text/plain")], b"no such item"
    elif scope["method"] == "POST":
        version = _write(item)
        status, headers, body = _written(item, version,
                                         await scalekit.ainvalidate([f"item:{item}"]))
    else:
        status, headers, body = _page(item)
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


# ``wsgi_app`` / ``asgi_app``, wrapped when a server imports one of them.
__getattr__ = wrapped_on_demand(globals(), {"wsgi_app": wsgi_origin, "asgi_app": asgi_origin},
                                cdn=False, pool=False, metrics=False)
