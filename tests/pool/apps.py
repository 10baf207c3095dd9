"""The test apps: one WSGI and one ASGI app whose path picks what the request does with its
connection (``/ok``, ``/raise``, ``/stream``, ``/write``, ...), over a scratch table."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from sqlalchemy import text

import scalekit
from scalekit.pool import db, release_at_response_start

# What a request does with its connection. "set" needs Postgres.
MODES = ("ok", "nodb", "raise", "write", "open_txn", "stream", "stream_raise", "raw",
         "release_early", "rollback")
SQLITE_MODES = MODES
POSTGRES_MODES = MODES + ("set",)


def make_wsgi_app(table: str) -> Any:
    """A PEP 3333 app over ``table`` (columns id, name, price)."""
    select = text(f"SELECT name, price FROM {table} WHERE id = 1")
    update = text(f"UPDATE {table} SET price = price + 1 WHERE id = 2")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        mode = environ["PATH_INFO"].strip("/")
        scalekit.set_route(f"/{mode}")
        if mode == "nodb":
            start_response("200 OK", [("content-type", "text/plain")])
            return [b"no database"]
        handle = environ["scalekit.db"]
        if mode == "raw":
            cursor = handle.dbapi_connection().cursor()
            cursor.execute(f"SELECT count(*) FROM {table}")
            count = cursor.fetchone()[0]
            cursor.close()
            start_response("200 OK", [("content-type", "text/plain")])
            return [str(count).encode()]
        connection = db().connection()
        connection.execute(select).all()
        if mode == "raise":
            raise RuntimeError("the app failed")
        if mode in ("write", "open_txn", "rollback"):
            connection.execute(update)
            if mode == "write":
                connection.commit()
            elif mode == "rollback":
                connection.rollback()
        if mode == "set":
            connection.exec_driver_sql("SET statement_timeout = 4321")
            connection.commit()
        if mode == "release_early":
            release_at_response_start()
        start_response("200 OK", [("content-type", "text/plain")])
        if mode in ("stream", "stream_raise", "release_early"):
            return _stream(connection, select, mode)
        if mode == "long_stream":
            return _long_stream(connection, select)
        return [b"ok"]

    return app


def _stream(connection: Any, select: Any, mode: str) -> Iterator[bytes]:
    for index in range(3):
        yield f"chunk {index}\n".encode()
        if mode != "release_early":
            connection.execute(select).all()  # the connection serves the whole stream
        if mode == "stream_raise" and index == 1:
            raise RuntimeError("the stream failed")


LONG_CHUNK = b"x" * 65536
LONG_CHUNKS = 400  # 25 MiB: more than socket buffers hold, so a client leaving stops it


def _long_stream(connection: Any, select: Any) -> Iterator[bytes]:
    for index in range(LONG_CHUNKS):
        if index % 50 == 0:
            connection.execute(select).all()
        yield LONG_CHUNK


def make_asgi_app(table: str) -> Any:
    """An ASGI 3 app over ``table`` doing the same per path."""
    select = text(f"SELECT name, price FROM {table} WHERE id = 1")
    update = text(f"UPDATE {table} SET price = price + 1 WHERE id = 2")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        mode = scope["path"].strip("/")
        scalekit.set_route(f"/{mode}")
        start = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"text/plain")]}
        if mode == "nodb":
            await send(start)
            await send({"type": "http.response.body", "body": b"no database"})
            return
        handle = scope["scalekit.db"]
        connection = await handle.aconnection()
        if mode == "raw":
            cursor = handle.dbapi_connection().cursor()
            cursor.execute(f"SELECT count(*) FROM {table}")
            cursor.close()
        connection.execute(select).all()
        if mode == "raise":
            raise RuntimeError("the app failed")
        if mode in ("write", "open_txn", "rollback"):
            connection.execute(update)
            if mode == "write":
                connection.commit()
            elif mode == "rollback":
                connection.rollback()
        if mode == "set":
            connection.exec_driver_sql("SET statement_timeout = 4321")
            connection.commit()
        if mode == "release_early":
            release_at_response_start()
        await send(start)
        if mode in ("stream", "stream_raise", "release_early"):
            for index in range(3):
                await send({"type": "http.response.body", "body": f"chunk {index}\n".encode(),
                            "more_body": True})
                await asyncio.sleep(0)  # let other requests run while this one holds its connection
                if mode != "release_early":
                    connection.execute(select).all()
                if mode == "stream_raise" and index == 1:
                    raise RuntimeError("the stream failed")
        if mode == "long_stream":
            for index in range(LONG_CHUNKS):
                if index % 50 == 0:
                    connection.execute(select).all()
                await send({"type": "http.response.body", "body": LONG_CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def wrap(app: Any, url: str, **database: Any) -> Any:
    """``scalekit.wrap`` with only the metrics and pool layers, on database ``url``."""
    settings = {"url": url, **database}
    return scalekit.wrap(app, cache=False, cdn=False, pool={"databases": {"default": settings}})
