"""The items domain on FastAPI: routers with prefixes, a mounted sub-app, sync and async
endpoints, BackgroundTasks, StreamingResponse and lifespan.

``create_app(install=..., **settings)`` builds an isolated app for in-process tests:
``"middleware"`` (``app.add_middleware(ScaleKitMiddleware)``) returns the FastAPI app,
``"wrap"`` (``scalekit_fastapi.wrap(app)``) returns the wrapped ASGI app. The module-level
``app`` (middleware) and ``wrapped_app`` (wrap) read their settings from env, for servers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import scalekit_fastapi
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from scalekit_fastapi import DB, ScaleKitMiddleware, ainvalidate, cache_for, cached, db
from sqlalchemy import text
from sqlalchemy.engine import Connection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import scalekit.pool

__all__ = ["app", "create_app", "wrapped_app"]


def create_app(install: Literal["middleware", "wrap"] = "middleware", **settings: Any) -> Any:
    calls: Counter[str] = Counter()
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    app.state.calls = calls
    app.state.events = events

    @app.get("/items/{item_id}")
    @cached(ttl_seconds=60, tags=["item:{item_id}"])
    def item(item_id: int, connection: DB) -> dict[str, Any]:  # sync: runs in the thread pool
        calls["item"] += 1
        row = connection.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).one_or_none()
        if row is None:
            raise HTTPException(404, "no such item")
        return {"id": item_id, "name": row.name}

    @app.get("/async/items/{item_id}", dependencies=[Depends(cache_for(60, tags=["item:{item_id}"]))])
    async def async_item(item_id: int, connection: Annotated[Connection, Depends(db)]) -> dict[str, Any]:
        calls["async_item"] += 1
        name = connection.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).scalar_one()
        return {"id": item_id, "name": name}

    @app.post("/admin/items/{item_id}/rename/{name}")
    def rename(item_id: int, name: str, connection: DB) -> dict[str, bool]:
        connection.execute(text("UPDATE items SET name = :name WHERE id = :id"), {"id": item_id, "name": name})
        connection.commit()  # committed: table tracking invalidates table:items
        return {"ok": True}

    @app.post("/admin/items/{item_id}/touch")
    async def touch(item_id: int) -> dict[str, bool]:
        await ainvalidate([f"item:{item_id}"])
        return {"ok": True}

    @app.get("/calls")
    def calls_view() -> dict[str, int]:
        return dict(calls)

    @app.get("/boom")
    async def boom(connection: DB) -> None:
        connection.execute(text("SELECT 1"))
        raise RuntimeError("the endpoint failed after using the database")

    @app.get("/stream")
    def stream(connection: DB) -> StreamingResponse:
        rows = connection.execute(text("SELECT id, name FROM items ORDER BY id")).all()

        async def generate() -> AsyncIterator[str]:
            for row in rows:
                await asyncio.sleep(0)
                yield f"{row.id},{row.name}\n"
        return StreamingResponse(generate(), media_type="text/plain")

    @app.get("/background")
    def background(tasks: BackgroundTasks, connection: DB) -> dict[str, bool]:
        connection.execute(text("SELECT 1"))

        def count_items() -> None:  # after the response: the request's connection is back
            with scalekit.pool.db().engine.connect() as own:
                events.append(f"background saw {own.execute(text('SELECT count(*) FROM items')).scalar_one()} items")
        tasks.add_task(count_items)
        return {"scheduled": True}

    @app.get("/events")
    def events_view() -> list[str]:
        return events

    api = APIRouter(prefix="/api")
    v2 = APIRouter(prefix="/v2")

    @v2.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"thing": thing_id}

    api.include_router(v2)
    app.include_router(api)

    sub = FastAPI()

    @sub.get("/deep/{value}")
    def deep(value: str) -> dict[str, str]:
        return {"value": value}

    app.mount("/sub", sub)

    async def tenant_page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"page {request.path_params['page']}")

    app.mount("/tenants/{tenant}", Starlette(routes=[Route("/pages/{page}", tenant_page)]))

    if install == "middleware":
        app.add_middleware(ScaleKitMiddleware, **settings)
        return app
    return scalekit_fastapi.wrap(app, **settings)


app = create_app("middleware")
wrapped_app = create_app("wrap")
