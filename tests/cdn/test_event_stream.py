"""Server-sent events are live: the app's cache never stores ``text/event-stream``, and neither
may the edge, or the next client is replayed old events. The CDN layer must therefore not stamp
shared freshness on them, whatever rule or default policy covers the path. (Behind the shipped
Varnish with ``default_policy: page``, as compose and the ConfigMap set it, a second client a
second later got the first client's three events as a HIT.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import scalekit

CDN_RULES = [
    pytest.param({"default_policy": "page"}, id="the default policy"),
    pytest.param({"rules": [{"path": "/events", "policy": "page"}]}, id="a rule over the path"),
]


def events(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/event-stream")])
    for number in range(3):
        yield f"data: {number}\n\n".encode()


@pytest.mark.parametrize("cdn", CDN_RULES)
def test_an_event_stream_is_never_stamped_for_shared_caches(cdn: dict[str, Any]) -> None:
    app = scalekit.wrap(events, pool=False, metrics=False, allowed_hosts=["shop.test"],
                        cache={"disk": {"enabled": False}}, cdn=cdn)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            response = client.get("/events")
    finally:
        app.runtime.close()
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    control = response.headers.get("cache-control", "")
    assert "public" not in control and "s-maxage" not in control, control
    assert "cdn-cache-control" not in response.headers and "surrogate-control" not in response.headers
