"""The Flask adapter with Flask's own test client: labels, pooled connections, cache, invalidation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from scalekit_flask import ScaleKit, db

import scalekit

from .apps.flask_items import create_app
from .support import (
    ITEMS,
    assert_hit,
    assert_not_hit,
    checked_out,
    exposition_text,
    pool_settings,
    request_count,
    route_labels,
    seed_items,
)


class ServerLikeClient(FlaskClient):
    """Reads and closes every response at once, as a WSGI server does when it has sent it
    (the layers finish their work in the body's ``close()``)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'items.sqlite3'}"
    seed_items(url)
    flask_app = create_app(**pool_settings(url, str(tmp_path / "state")))
    flask_app.test_client_class = ServerLikeClient
    yield flask_app
    flask_app.extensions["scalekit"].close()


def runtime_of(app: Flask) -> scalekit.Runtime:
    runtime = app.extensions["scalekit"].runtime
    assert runtime is not None
    return runtime


def test_the_app_stays_a_flask_app_with_a_wrapped_wsgi_app(app: Flask) -> None:
    assert isinstance(app, Flask)
    assert "scalekit" in repr(app.wsgi_app)
    with pytest.raises(RuntimeError, match="already installed"):
        ScaleKit(app)


def test_init_app_for_factories_reads_app_config(tmp_path: Path) -> None:
    extension = ScaleKit()
    factory_app = Flask("factory")
    factory_app.config["SCALEKIT"] = {"state_dir": str(tmp_path / "state"), "cache": {"enabled": False}}
    extension.init_app(factory_app)
    try:
        assert extension.runtime is not None
        assert extension.runtime.config.cache.enabled is False
        assert factory_app.extensions["scalekit"] is extension
    finally:
        extension.close()


def test_route_labels_are_url_rules_and_unmatched(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/calls").status_code == 200
    assert client.get("/shop/things/spoon").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    exposition = exposition_text()
    labels = route_labels(exposition)
    assert {"/calls", "/shop/things/<name>", "unmatched"} <= labels
    assert not {"/shop/things/spoon", "/no/such/page"} & labels
    assert request_count(exposition, "unmatched", "4xx") >= 1


def test_cached_view_runs_once_then_hits(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/items/1")
    second = client.get("/items/1")
    assert first.get_json() == second.get_json() == {"id": 1, "name": ITEMS[1]}
    assert_not_hit(first.headers)
    assert_hit(second.headers)
    assert app.extensions["calls"]["item"] == 1


def test_a_committed_update_invalidates_through_table_tracking(app: Flask) -> None:
    client = app.test_client()
    client.get("/items/2")
    assert_hit(client.get("/items/2").headers)
    assert client.post("/admin/items/2/rename/samovar").status_code == 200
    after = client.get("/items/2")
    assert_not_hit(after.headers)
    assert after.get_json()["name"] == "samovar"
    assert app.extensions["calls"]["item"] == 2


def test_invalidate_by_tag_reaches_the_next_request(app: Flask) -> None:
    client = app.test_client()
    client.get("/items/3")
    assert_hit(client.get("/items/3").headers)
    client.post("/admin/items/3/touch")
    assert_not_hit(client.get("/items/3").headers)
    assert app.extensions["calls"]["item"] == 2


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/items/1", 200, id="ok"),
    pytest.param("/items/99", 404, id="abort after a query"),
    pytest.param("/boom", 500, id="unhandled exception"),
    pytest.param("/boom/handled", 500, id="error handler uses the database too"),
    pytest.param("/stream", 200, id="streamed with stream_with_context"),
    pytest.param("/g", 200, id="handle on flask.g"),
])
def test_the_connection_is_back_in_the_pool_whatever_happened(app: Flask, path: str, status: int) -> None:
    response = app.test_client().get(path)
    assert response.status_code == status
    assert checked_out(runtime_of(app)) == 0


def test_the_connection_is_back_when_the_exception_propagates(app: Flask) -> None:
    app.testing = True  # PROPAGATE_EXCEPTIONS: the error leaves Flask through every layer
    with pytest.raises(RuntimeError, match="the view failed"):
        app.test_client().get("/boom")
    assert checked_out(runtime_of(app)) == 0


def test_streamed_rows_arrive_complete(app: Flask) -> None:
    body = app.test_client().get("/stream").get_data(as_text=True)
    assert body.splitlines() == [f"{item_id},{name}" for item_id, name in ITEMS.items()]


def test_db_outside_a_request_says_what_to_do() -> None:
    with pytest.raises(Exception, match="outside"):
        db.execute  # noqa: B018  (touching the proxy resolves it)


def test_cache_hits_are_counted_under_the_route_template(app: Flask) -> None:
    client = app.test_client()
    before = request_count(exposition_text(), "/items/<int:item_id>")
    client.get("/items/1")
    assert_hit(client.get("/items/1").headers)
    assert request_count(exposition_text(), "/items/<int:item_id>") == before + 2
