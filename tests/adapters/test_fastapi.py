"""The FastAPI/Starlette adapter with Starlette's test client, installed both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from scalekit_fastapi import RouteTemplates, ScaleKitMiddleware
from starlette.testclient import TestClient

import scalekit

from .apps.fastapi_items import create_app
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

INSTALLS = ["middleware", "wrap"]


def fastapi_app_of(app: Any) -> FastAPI:
    """The FastAPI app itself: ``app``, or the one behind ``scalekit_fastapi.wrap``."""
    node = app
    while not isinstance(node, FastAPI):
        node = node.app
    return node


def runtime_of(app: Any) -> scalekit.Runtime:
    """The pipeline's runtime: on the wrapper, or inside Starlette's built middleware stack."""
    runtime = getattr(app, "runtime", None)
    if runtime is not None:
        return runtime
    node = app.middleware_stack
    while node is not None and not isinstance(node, ScaleKitMiddleware):
        node = getattr(node, "app", None)
    assert node is not None, "ScaleKitMiddleware is not in the built middleware stack"
    return node.runtime


@pytest.fixture(params=INSTALLS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path / 'items.sqlite3'}"
    seed_items(url)
    built = create_app(request.param, **pool_settings(url, str(tmp_path / "state")))
    yield built
    if request.param == "wrap":
        built.runtime.close()


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def calls(app: Any) -> dict[str, int]:
    return dict(fastapi_app_of(app).state.calls)


def test_route_labels_are_templates_with_prefixes_and_mounts(client: TestClient) -> None:
    paths = {"/calls": "/calls",
             "/api/v2/things/spoon": "/api/v2/things/{thing_id}",
             "/sub/deep/sea": "/sub/deep/{value}",
             "/tenants/acme/pages/7": "/tenants/{tenant}/pages/{page}"}
    for path in paths:
        assert client.get(path).status_code == 200, path
    assert client.get("/no/such/page").status_code == 404
    exposition = exposition_text()
    labels = route_labels(exposition)
    assert set(paths.values()) | {"unmatched"} <= labels
    assert not {path for path, template in paths.items() if path != template} & labels
    assert request_count(exposition, "unmatched", "4xx") >= 1


@pytest.mark.parametrize("path", ["/items/1", "/async/items/1"], ids=["decorator, sync", "dependency, async"])
def test_cached_endpoint_runs_once_then_hits(app: Any, client: TestClient, path: str) -> None:
    first = client.get(path)
    second = client.get(path)
    assert first.json() == second.json() == {"id": 1, "name": ITEMS[1]}
    assert_not_hit(first.headers)
    assert_hit(second.headers)
    assert sum(calls(app).values()) == 1


def test_a_committed_update_invalidates_through_table_tracking(app: Any, client: TestClient) -> None:
    client.get("/items/2")
    assert_hit(client.get("/items/2").headers)
    assert client.post("/admin/items/2/rename/samovar").status_code == 200
    after = client.get("/items/2")
    assert_not_hit(after.headers)
    assert after.json()["name"] == "samovar"
    assert calls(app)["item"] == 2


def test_ainvalidate_by_tag_reaches_the_next_request(app: Any, client: TestClient) -> None:
    client.get("/items/3")
    assert_hit(client.get("/items/3").headers)
    client.post("/admin/items/3/touch")
    assert_not_hit(client.get("/items/3").headers)
    assert calls(app)["item"] == 2


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/items/1", 200, id="sync endpoint"),
    pytest.param("/async/items/2", 200, id="async endpoint"),
    pytest.param("/items/99", 404, id="HTTPException after a query"),
    pytest.param("/boom", 500, id="unhandled exception"),
    pytest.param("/stream", 200, id="StreamingResponse"),
    pytest.param("/background", 200, id="BackgroundTasks using the connection"),
])
def test_the_connection_is_back_in_the_pool_whatever_happened(app: Any, client: TestClient,
                                                              path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert checked_out(runtime_of(app)) == 0


def test_background_tasks_open_their_own_connection(app: Any, client: TestClient) -> None:
    assert client.get("/background").json() == {"scheduled": True}
    assert f"background saw {len(ITEMS)} items" in client.get("/events").json()


def test_streamed_rows_arrive_complete(client: TestClient) -> None:
    body = client.get("/stream").text
    assert body.splitlines() == [f"{item_id},{name}" for item_id, name in ITEMS.items()]


def test_lifespan_reaches_the_app_and_starts_the_layers(app: Any) -> None:
    events = fastapi_app_of(app).state.events
    with TestClient(app) as test_client:
        assert events == ["startup"]
        assert runtime_of(app).started
        test_client.get("/calls")
    assert events == ["startup", "shutdown"]


def test_route_templates_without_the_pipeline_leave_requests_alone() -> None:
    inner = FastAPI()

    @inner.get("/plain")
    def plain() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(RouteTemplates(inner)) as test_client:
        assert test_client.get("/plain").json() == {"ok": True}


def test_cache_hits_are_counted_under_the_route_template(client: TestClient) -> None:
    before = request_count(exposition_text(), "/items/{item_id}")
    client.get("/items/1")
    assert_hit(client.get("/items/1").headers)
    assert request_count(exposition_text(), "/items/{item_id}") == before + 2
