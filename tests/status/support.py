"""What the status tests share: a cached app to drive, the page's numbers read from its HTML,
and the /metrics figures each of them must equal.

>>> cells = page_values(b'<td id="requests-total" data-value="3.0">3</td>')
>>> cells["requests-total"]
3.0
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import scalekit
from tests.direct import asgi_scope, call_asgi, call_wsgi

__all__ = ["CACHED", "MATCHES_METRICS", "Samples", "StatusDriver", "metric_sum", "page_values", "samples_of"]

Samples = list[tuple[str, dict[str, str], float]]

# Page cell id -> (sample name, labels it must carry): the page shows the sum of those samples.
MATCHES_METRICS: dict[str, tuple[str, dict[str, str]]] = {
    "requests-total": ("scalekit_http_requests_total", {}),
    "requests-5xx": ("scalekit_http_requests_total", {"status": "5xx"}),
    "requests-in-flight": ("scalekit_http_requests_in_flight", {}),
    "cache-hit": ("scalekit_cache_requests_total", {"outcome": "hit"}),
    "cache-miss": ("scalekit_cache_requests_total", {"outcome": "miss"}),
    "cache-uncacheable": ("scalekit_cache_requests_total", {"outcome": "uncacheable"}),
    "tier-memory-hits": ("scalekit_cache_lookups_total", {"tier": "memory", "outcome": "hit"}),
    "tier-memory-misses": ("scalekit_cache_lookups_total", {"tier": "memory", "outcome": "miss"}),
    "tier-memory-bytes": ("scalekit_cache_bytes", {"tier": "memory"}),
    "tier-memory-max-bytes": ("scalekit_cache_max_bytes", {"tier": "memory"}),
    "tier-memory-entries": ("scalekit_cache_entries", {"tier": "memory"}),
    "invalidations-total": ("scalekit_cache_invalidations_total", {}),
    "saved-origin": ("scalekit_cache_origin_seconds_saved_total", {}),
    "saved-db": ("scalekit_cache_db_seconds_saved_total", {}),
}


def samples_of(exposition: bytes) -> Samples:
    return [(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(exposition.decode())
            for sample in family.samples]


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels`` (others may differ)."""
    return sum(value for sample, sample_labels, value in samples
               if sample == name and labels.items() <= sample_labels.items())


class _Values(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, float] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id") and attributes.get("data-value") is not None:
            self.values[str(attributes["id"])] = float(str(attributes["data-value"]))


def page_values(html: bytes) -> dict[str, float]:
    """Every cell of the page with an id and a raw value: id -> value."""
    parser = _Values()
    parser.feed(html.decode())
    return parser.values


def cached_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """``/items/<id>``: cacheable for a minute, route ``/items/{id}``; anything else: private."""
    path = environ["PATH_INFO"]
    if path.startswith("/items/"):
        scalekit.set_route("/items/{id}")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        return [b"item " + path.encode()]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "private")])
    return [b"private"]


async def cached_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    cache_control, body = b"private", b"private"
    if path.startswith("/items/"):
        scalekit.set_route("/items/{id}")
        cache_control, body = b"max-age=60", b"item " + path.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", cache_control)]})
    await send({"type": "http.response.body", "body": body})


CACHED = {"wsgi": cached_wsgi, "asgi": cached_asgi}


class StatusDriver:
    """Requests to a cached app (memory tier only) wrapped for WSGI or ASGI, called in process."""

    def __init__(self, kind: str, **settings: Any) -> None:
        self.kind = kind
        settings.setdefault("cache", {"disk": {"enabled": False}})
        self.app = scalekit.wrap(CACHED[kind], cdn=False, pool=False, **settings)

    def request(self, method: str = "GET", path: str = "/", *, client: str = "127.0.0.1",
                authorization: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.kind == "wsgi":
            headers = [("Authorization", authorization)] if authorization else []
            result = call_wsgi(self.app, method, path, remote_addr=client, headers=headers)
            return result.status_code, [(k.lower(), v) for k, v in result.headers], result.body
        asgi_headers = [(b"authorization", authorization.encode())] if authorization else []
        outcome = call_asgi(self.app, asgi_scope(method, path, headers=asgi_headers, client=(client, 1234)))
        return outcome.status, [(k.decode(), v.decode()) for k, v in outcome.headers], outcome.body

    def get(self, path: str, **options: Any) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = self.request("GET", path, **options)
        return status, dict(headers), body
