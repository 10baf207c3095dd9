"""The adapters' ``@cached`` and web cache deception: the freshness a decorator grants never
stores the answer to a request that carried Cookie or Authorization (a client without them
would get another user's page), unless the decorator says the response is the same for every
user (``public=True``, as ``cache_response()`` and ``[[cache.rules]]`` take it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from flask import Flask, request
from starlette.testclient import TestClient

from .support import assert_hit, assert_not_hit

Get = Callable[[str, dict[str, str]], Any]
ALICE = {"Cookie": "session=alice"}


def settings(tmp_path: Path) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "pool": False, "metrics": False, "cdn": False,
            "allowed_hosts": ["testserver", "localhost"], "cache": {"disk": {"enabled": False}}}


def flask_site(tmp_path: Path, decorator_options: dict[str, Any]) -> Iterator[Get]:
    from scalekit_flask import ScaleKit, cached

    app = Flask("scalekit_test_deception")

    @app.get("/account/settings.css")
    @cached(60, **decorator_options)
    def account() -> str:
        return f"settings of {request.cookies.get('session', 'nobody')}"

    extension = ScaleKit(app, **settings(tmp_path))
    client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://localhost")

    def get(path: str, headers: dict[str, str]) -> Any:
        client.cookies.clear()
        response = client.get(path, headers=headers)
        return response.text, response.headers
    yield get
    client.close()
    extension.close()


def fastapi_site(tmp_path: Path, decorator_options: dict[str, Any]) -> Iterator[Get]:
    from scalekit_fastapi import ScaleKitMiddleware, cached

    app = FastAPI()

    @app.get("/account/settings.css", response_class=PlainTextResponse)
    @cached(60, **decorator_options)
    async def account(request: Request) -> str:
        return f"settings of {request.cookies.get('session', 'nobody')}"

    app.add_middleware(ScaleKitMiddleware, **settings(tmp_path))
    with TestClient(app) as client:
        def get(path: str, headers: dict[str, str]) -> Any:
            client.cookies.clear()
            response = client.get(path, headers=headers)
            return response.text, response.headers
        yield get


SITES = {"flask": flask_site, "fastapi": fastapi_site}


@pytest.mark.parametrize("framework", sorted(SITES))
def test_a_decorated_view_never_stores_a_page_asked_for_with_a_cookie(framework: str, tmp_path: Path) -> None:
    site = SITES[framework](tmp_path, {})
    get = next(site)
    text, _ = get("/account/settings.css", ALICE)
    assert text == "settings of alice"
    text, headers = get("/account/settings.css", {})
    assert text == "settings of nobody"
    assert_not_hit(headers)
    site.close()


@pytest.mark.parametrize("framework", sorted(SITES))
def test_a_decorated_view_may_opt_in_for_a_page_the_same_for_everyone(framework: str, tmp_path: Path) -> None:
    site = SITES[framework](tmp_path, {"public": True})
    get = next(site)
    first, _ = get("/account/settings.css", ALICE)
    again, headers = get("/account/settings.css", {})
    assert again == first
    assert_hit(headers)
    site.close()


def test_the_django_decorator_takes_the_opt_in_too() -> None:
    from scalekit_django import cached

    cached(60, public=True)
