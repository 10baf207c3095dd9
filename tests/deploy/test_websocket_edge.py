"""A WebSocket through the shipped compose edge: nginx (front) -> Varnish (deploy/varnish,
which pipes upgrades) -> nginx (fleet server) -> an ASGI app under gunicorn's uvicorn worker.
The upgrade reaches the app and an echo comes back; plain pages through the same edge are still
cached (the keep-alive "Connection" stays empty for them)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from .conftest import start_edge
from .harness import FLEET_WSGI

pytestmark = [pytest.mark.nginx, pytest.mark.server]

ASGI_FLEET = FLEET_WSGI.replace(":wsgi_app", ":asgi_app")


def test_a_websocket_upgrades_through_the_shipped_edge(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    with start_edge(tmp_path, 1, target=ASGI_FLEET, env={"WORKER_CLASS": "uvicorn.workers.UvicornWorker"}) as edge:
        async def talk() -> str:
            url = edge.url.replace("http://", "ws://") + "/ws"
            async with connect(url, open_timeout=10) as socket:
                await socket.send("hello")
                return str(await asyncio.wait_for(socket.recv(), 10))

        assert asyncio.run(talk()) == "echo hello from app1"
        page = f"/cacheable?v={uuid.uuid4().hex}"
        with httpx.Client(base_url=edge.url, headers={"Host": "shop.test"}, timeout=10) as client:
            assert client.get(page).headers["x-cache-status"] == "MISS"
            assert client.get(page).headers["x-cache-status"] == "HIT"
