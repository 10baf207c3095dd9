"""The items domain on Flask through ``ScaleKit(app)``; ``app`` reads its settings from env.

``create_app(**settings)`` builds an isolated app for in-process tests; ``calls`` counts how
often each view really ran (a cache hit runs none), also served at ``/calls`` for servers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, abort, g, jsonify, stream_with_context
from scalekit_flask import ScaleKit, cached, db, invalidate, tag
from sqlalchemy import text

__all__ = ["app", "create_app"]


class Boom(Exception):
    """Raised by /boom/handled; the app's error handler answers it (and uses the database)."""


def create_app(**settings: Any) -> Flask:
    app = Flask("scalekit_test_flask_items")
    calls: Counter[str] = Counter()
    app.extensions["calls"] = calls

    @app.get("/items/<int:item_id>")
    @cached(ttl_seconds=60, tags=["item:{item_id}"])
    def item(item_id: int) -> Any:
        calls["item"] += 1
        row = db.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).one_or_none()
        if row is None:
            abort(404)
        return jsonify(id=item_id, name=row.name)

    @app.post("/admin/items/<int:item_id>/rename/<name>")
    def rename(item_id: int, name: str) -> Any:
        db.execute(text("UPDATE items SET name = :name WHERE id = :id"), {"id": item_id, "name": name})
        db.commit()  # committed: table tracking invalidates table:items
        return jsonify(ok=True)

    @app.post("/admin/items/<int:item_id>/touch")
    def touch(item_id: int) -> Any:
        invalidate([f"item:{item_id}"])
        return jsonify(ok=True)

    @app.get("/calls")
    def calls_view() -> Any:
        return jsonify(dict(calls))

    @app.get("/boom")
    def boom() -> Any:
        db.execute(text("SELECT 1"))
        raise RuntimeError("the view failed after using the database")

    @app.get("/boom/handled")
    def boom_handled() -> Any:
        db.execute(text("SELECT 1"))
        raise Boom()

    @app.errorhandler(Boom)
    def handle_boom(error: Boom) -> Any:
        count = db.execute(text("SELECT count(*) FROM items")).scalar_one()
        return jsonify(error="boom", items=count), 500

    @app.get("/stream")
    def stream() -> Response:
        rows = db.execute(text("SELECT id, name FROM items ORDER BY id"))

        def generate() -> Iterator[str]:
            for row in rows:
                yield f"{row.id},{row.name}\n"
        return Response(stream_with_context(generate()), mimetype="text/plain")

    @app.get("/g")
    def uses_g() -> Any:
        name = g.scalekit_db.connection().execute(text("SELECT name FROM items WHERE id = 1")).scalar_one()
        return jsonify(name=name)

    @app.get("/tagged")
    def tagged() -> Any:
        tag("custom:tag")
        return jsonify(ok=True)

    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @shop.get("/things/<name>")
    def thing(name: str) -> Any:
        return jsonify(name=name)

    app.register_blueprint(shop)
    ScaleKit(app, **settings)
    return app


app = create_app()
