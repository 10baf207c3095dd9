"""The CDN layer around the cache layer on a miss, WSGI and ASGI.

A stored miss leaves with the ETag the cache put in its new entry (the CDN layer does not hash
the body again), which is the ETag every later hit serves; a conditional miss is answered 304
from it. A miss the cache cannot store gets its ETag from the CDN layer (the same hash) unless
it says no-store. Header names in any case are read alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import scalekit
from scalekit.cdn.etag import body_etag

SETTINGS: dict[str, Any] = {"pool": False, "metrics": False, "allowed_hosts": ["shop.test"],
                            "cache": {"disk": {"enabled": False}}}
BODY = b"<p>lamp</p>" * 20
# The app's Cache-Control per path; names in the app's own case.
CONTROLS = {"/stored": "max-age=300", "/private": "private, max-age=300", "/nostore": "no-store"}


def wsgi_page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Cache-Control", CONTROLS[environ["PATH_INFO"]]),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]


async def asgi_page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html"), (b"cache-control", CONTROLS[scope["path"]].encode()),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


Requests = list[tuple[str, dict[str, str]]]


def wsgi_answers(requests: Requests) -> list[httpx.Response]:
    app = scalekit.wrap(wsgi_page, **SETTINGS)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            return [client.get(path, headers=headers) for path, headers in requests]
    finally:
        app.runtime.close()


def asgi_answers(requests: Requests) -> list[httpx.Response]:
    app = scalekit.wrap(asgi_page, **SETTINGS)

    async def fetch() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    try:
        return asyncio.run(fetch())
    finally:
        app.runtime.close()


drivers = pytest.mark.parametrize("answers", [wsgi_answers, asgi_answers], ids=["wsgi", "asgi"])
CURRENT = {"If-None-Match": body_etag(BODY)}


@drivers
def test_a_stored_miss_carries_the_etag_its_hits_serve(answers: Any) -> None:
    miss, hit = answers([("/stored", {}), ("/stored", {})])
    assert "stored" in miss.headers["cache-status"]
    assert hit.headers["cache-status"].split(";")[1].strip() == "hit"
    assert miss.headers["etag"] == hit.headers["etag"] == body_etag(BODY)
    assert miss.headers.get_list("etag") == [body_etag(BODY)]  # one ETag, not one per layer
    assert miss.content == hit.content == BODY


@drivers
def test_a_conditional_stored_miss_is_answered_304(answers: Any) -> None:
    miss, stale_validator, hit = answers([("/stored", CURRENT), ("/stored", {"If-None-Match": '"old"'}),
                                          ("/stored", {})])
    assert miss.status_code == 304 and miss.content == b""
    assert "stored" in miss.headers["cache-status"]
    assert miss.headers["etag"] == body_etag(BODY)
    assert stale_validator.status_code == 200 and stale_validator.content == BODY
    assert hit.status_code == 200 and hit.headers["etag"] == body_etag(BODY)


@drivers
def test_a_miss_the_cache_cannot_store_gets_the_same_etag_and_304(answers: Any) -> None:
    plain, conditional = answers([("/private", {}), ("/private", CURRENT)])
    assert "stored" not in plain.headers["cache-status"]
    assert plain.headers.get_list("etag") == [body_etag(BODY)]
    assert plain.content == BODY
    assert conditional.status_code == 304 and conditional.content == b""
    assert conditional.headers["etag"] == body_etag(BODY)


@drivers
def test_a_no_store_miss_gets_no_etag_and_is_never_304(answers: Any) -> None:
    plain, conditional = answers([("/nostore", {}), ("/nostore", CURRENT)])
    assert "etag" not in plain.headers
    assert conditional.status_code == 200 and conditional.content == BODY
    assert plain.headers["cache-control"] == "no-store"
