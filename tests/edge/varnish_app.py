"""The pages Varnish caches in tests/edge/test_varnish.py. GET /products/<id> reads the product
from Postgres through the pool (so the page is tagged table:<table>, sent as xkey), POST
/products/<id>?price=N commits an UPDATE. GET /notes/<id> answers a note kept in memory (no
tag at all), POST /notes/<id> with a body replaces it: only the URL purge of that POST can
refresh Varnish's copy. GET /whoami answers the cookies that reached the app. Configured by SCALEKIT_* variables and
SK_EDGE_TABLE."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import text

import scalekit
from scalekit.pool import db

TABLE = os.environ.get("SK_EDGE_TABLE", "missing")
NOTES: dict[str, str] = {}


def shop(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"].startswith("/notes/"):
        return note(environ, start_response)
    if environ["PATH_INFO"] == "/whoami":
        return whoami(environ, start_response)
    product = int(environ["PATH_INFO"].rsplit("/", 1)[-1])
    connection = db().connection()
    if environ["REQUEST_METHOD"] == "POST":
        price = int(parse_qs(environ.get("QUERY_STRING", ""))["price"][0])
        connection.execute(text(f"UPDATE {TABLE} SET price = :price WHERE id = :id"),
                           {"price": price, "id": product})
        connection.commit()
        body = b"updated"
    else:
        name, price = connection.execute(text(f"SELECT name, price FROM {TABLE} WHERE id = :id"),
                                         {"id": product}).one()
        body = json.dumps({"name": name, "price": price}).encode()
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(body)))])
    return [body]


def note(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        NOTES[environ["PATH_INFO"]] = environ["wsgi.input"].read(length).decode()
    body = json.dumps({"note": NOTES.get(environ["PATH_INFO"], "")}).encode()
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(body)))])
    return [body]


def whoami(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A page built from the cookies that reached the app, with no caching headers of its own."""
    body = json.dumps({"cookies": environ.get("HTTP_COOKIE", "")}).encode()
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(body)))])
    return [body]


app = scalekit.wrap(shop)
