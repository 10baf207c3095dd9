"""Stored entries are checked by range, not only by type: whatever bytes L2 or L3 hand back,
the cache serves a valid response or counts a miss, never raises nor answers 500."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from scalekit.cache import layer
from scalekit.cache.codec import FORMAT_VERSION, Codec
from scalekit.cache.config import CacheConfig
from scalekit.cache.entry import CachedEntry
from scalekit.cache.policy import CachePolicy, RequestView, Serve
from scalekit.cache.tiers.disk import DiskTier
from scalekit.config import load_config
from scalekit.messages import status_line
from scalekit.runtime import Runtime
from scalekit.wsgi import WSGIRoot

NOW = 1_700_000_000.0
POLICY = CachePolicy(CacheConfig(), allowed_hosts=("*",))
REQUESTS = [
    RequestView("GET", "http", "a.test", "/", "", {}.get, False),
    RequestView("HEAD", "http", "a.test", "/", "", {}.get, False),
    RequestView("GET", "http", "a.test", "/", "", {"range": "bytes=0-1", "if-none-match": '"x"'}.get),
    RequestView("GET", "http", "a.test", "/", "", {"if-modified-since": "Sun, 06 Nov 1994 08:49:37 GMT",
                                                   "cache-control": "max-stale"}.get),
]

# Values of the right type for each field but of any range, and now and then of another type.
wild_text = st.text(max_size=8) | st.sampled_from(["\r\n", "é€", "content-type", "x a", "*", ""])
wild_float = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1.0, 0.0, NOW])
wild_int = st.integers(-(2**63), 2**64 - 1) | st.sampled_from([0, 99, 100, 200, 304, 599, 600, 1000])
other_type = st.none() | st.booleans() | st.binary(max_size=4) | st.lists(wild_text, max_size=2)
FIELDS = {
    "status": wild_int, "headers": st.lists(st.tuples(wild_text, wild_text), max_size=3),
    "body": st.binary(max_size=20), "request_time": wild_float, "response_time": wild_float,
    "corrected_initial_age_seconds": wild_float, "freshness_lifetime_seconds": wild_float,
}
OPTIONAL_FIELDS = {
    "stale_while_revalidate_seconds": wild_float, "stale_if_error_seconds": wild_float,
    "requires_revalidation": st.booleans(), "must_revalidate": st.booleans(),
    "tags": st.lists(st.tuples(wild_text, wild_int), max_size=2), "vary": st.lists(wild_text, max_size=2),
    "secondary_key": wild_text, "is_vary_index": st.booleans(), "variants_id": wild_text,
    "route": wild_text,
}
field_maps = st.fixed_dictionaries(
    {name: strategy | other_type for name, strategy in FIELDS.items()},
    optional={name: strategy | other_type for name, strategy in OPTIONAL_FIELDS.items()})


def serve_every_way(entry: CachedEntry) -> None:
    """What the cache does with an entry a tier returned: it must never raise, and whatever it
    serves must be a sendable HTTP response."""
    for request in REQUESTS:
        for now in (NOW, entry.response_time, entry.response_time + 1e6):
            decision = POLICY.decide_request(request, (entry, "disk"), now=now)
            if isinstance(decision, Serve):
                assert 200 <= decision.status <= 599
                status_line(decision.status)
                for name, value in decision.headers:
                    name.encode("latin-1"), value.encode("latin-1")
                    assert "\r" not in value and "\n" not in value and name
            if not request.special:
                POLICY.plain_hit(entry, now)


@settings(max_examples=250, deadline=None)
@given(fields=field_maps, compressed=st.booleans())
def test_any_stored_map_is_a_valid_entry_or_a_miss(fields: dict[str, Any], compressed: bool) -> None:
    payload = msgpack.packb({**fields, "__key__": "k"}, use_bin_type=True)
    flags = 0
    if compressed:
        import zlib

        payload, flags = zlib.compress(payload), 0x01
    entry, outcome = Codec().decode("k", b"SK" + bytes((FORMAT_VERSION, flags)) + payload)
    assert (entry is None) == (outcome != "ok")
    if entry is not None:
        serve_every_way(entry)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_are_a_valid_entry_or_a_miss(data: bytes) -> None:
    for candidate in (data, b"SK" + bytes((FORMAT_VERSION, 0)) + data):
        entry, _ = Codec().decode("k", candidate)
        if entry is not None:
            serve_every_way(entry)


# ------------------------------------------------------------------ through the whole layer


def origin(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain"), ("cache-control", "max-age=60")])
    return [b"from the origin"]


def bad(**fields: Any) -> CachedEntry:
    base: dict[str, Any] = {"status": 200, "headers": (("content-type", "text/plain"),),
                            "body": b"poisoned", "request_time": NOW, "response_time": NOW,
                            "corrected_initial_age_seconds": 0.0, "freshness_lifetime_seconds": 600.0}
    return CachedEntry(**{**base, **fields})


class Verbatim(Codec):
    """Writes the bytes it was given, whatever the entry."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def encode(self, key: str, entry: CachedEntry) -> bytes:
        return self.data


def corrupt_lookups() -> float:
    return REGISTRY.get_sample_value("scalekit_cache_lookups_total",
                                     {"tier": "disk", "outcome": "corrupt"}) or 0.0


@pytest.mark.parametrize("entry", [
    pytest.param(bad(status=1000), id="status 1000"),
    pytest.param(bad(status=0), id="status 0"),
    pytest.param(bad(headers=(("x-a", "1\r\nset-cookie: s=1"),)), id="CR LF in a value"),
    pytest.param(bad(headers=(("x-a", "\u20ac"),)), id="value beyond latin-1"),
    pytest.param(bad(freshness_lifetime_seconds=math.inf), id="infinite lifetime"),
    pytest.param(bad(response_time=math.nan), id="NaN response time"),
])
def test_an_out_of_range_entry_on_disk_is_a_counted_miss(tmp_path: Path, entry: CachedEntry) -> None:
    config = load_config({"cache": {"memory": {"enabled": False},
                                    "disk": {"path": str(tmp_path), "retain_stale_seconds": 0}},
                          "cdn": {"enabled": False}, "allowed_hosts": ["a.test"]},
                         environ={}, cwd=str(tmp_path))
    runtime = Runtime(config, clock=lambda: NOW)
    disk = DiskTier(tmp_path, clock=lambda: NOW, codec=Codec(), retain_stale_seconds=0)
    try:
        app = WSGIRoot(origin, layer.wrap_wsgi(origin, runtime), runtime)
        # Stored as its bytes, as a writer of another version (or a bit flip) would have left it.
        writer = DiskTier(tmp_path, clock=lambda: NOW, codec=Verbatim(Codec().encode("http://a.test/page", entry)),
                          retain_stale_seconds=0)
        writer.set("http://a.test/page", bad())
        writer.close()
        before = corrupt_lookups()
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://a.test") as client:
            reply = client.get("/page")
        assert (reply.status_code, reply.content) == (200, b"from the origin")
        assert corrupt_lookups() == before + 1
        assert runtime.services["cache.store"].flush()
        stored = disk.get("http://a.test/page")
        assert stored is not None and stored[0].body == b"from the origin"  # replaced by the miss
    finally:
        disk.close()
        runtime.close()
