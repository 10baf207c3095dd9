"""Partial content (RFC 9111 §3.3-§3.4, RFC 9110 §14, §15.3.7): 206 responses are stored,
serve the ranges they wholly contain, and combine into a complete response when they share a
strong validator. A 200 carrying Content-Range is a complete 200 (the field means nothing there).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scalekit.cache.config import CacheConfig
from scalekit.cache.entry import CachedEntry
from scalekit.cache.policy import Buffer, CachePolicy, Forward, RequestView, Serve
from scalekit.cache.storable import NotStorable, StorePlan, StoreSettings, analyse_response
from scalekit.headers import format_http_date
from tests.cache.harness import Harness

Make = Callable[..., Harness]
NOW = 1_000_000.0
DATE = format_http_date(NOW)
POLICY = CachePolicy(CacheConfig(), allowed_hosts=("*",))
BODY = b"0123456789"


def analyse(status: int, headers: list[tuple[str, str]]) -> StorePlan | NotStorable:
    return analyse_response(status, [("date", DATE), ("cache-control", "max-age=60"), *headers], {}.get,
                            now=NOW, request_time=NOW, rule=None, settings=StoreSettings())


@pytest.mark.parametrize("status, headers, storable", [
    pytest.param(206, [("content-range", "bytes 0-3/10")], True, id="§3.3 a 206 may be stored"),
    pytest.param(206, [("content-type", "multipart/byteranges; boundary=x")], False,
                 id="a multipart 206 (no Content-Range) is not"),
    pytest.param(206, [("content-range", "bytes 0-3/*")], False, id="unknown complete length"),
    pytest.param(206, [("content-range", "bytes 5-3/10")], False, id="an invalid range"),
    pytest.param(206, [("content-range", "bytes 0-10/10")], False, id="past the complete length"),
    pytest.param(206, [("content-range", "items 0-3/10")], False,
                 id="RFC 9110 §14.4 a unit the cache does not understand"),
    pytest.param(200, [("content-range", "bytes 0-3/10")], True,
                 id="RFC 9110 §14.4 Content-Range means nothing on a 200: stored as complete"),
])
def test_storable(status: int, headers: list[tuple[str, str]], storable: bool) -> None:
    assert isinstance(analyse(status, headers), StorePlan) is storable


def piece(start: int, stop: int, *, etag: str = '"e"', lifetime: float = 60) -> CachedEntry:
    headers = (("date", DATE), ("etag", etag), ("content-range", f"bytes {start}-{stop - 1}/10"),
               ("content-length", str(stop - start)))
    return CachedEntry(status=206, headers=headers,
                       body=BODY[start:stop], request_time=NOW, response_time=NOW,
                       corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=lifetime)


def view(method: str = "GET", **headers: str) -> RequestView:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return RequestView(method, "http", "shop.test", "/p", "", named.get)


def test_a_range_wholly_within_is_served() -> None:
    decision = POLICY.decide_request(view(range="bytes=2-4"), (piece(0, 6), "memory"), now=NOW + 1)
    assert isinstance(decision, Serve) and decision.status == 206 and decision.body == b"234"
    headers = dict(decision.headers)
    assert headers["content-range"] == "bytes 2-4/10" and headers["content-length"] == "3"
    suffix = POLICY.decide_request(view(range="bytes=-3"), (piece(5, 10), "memory"), now=NOW + 1)
    assert isinstance(suffix, Serve) and suffix.body == b"789"


@pytest.mark.parametrize("request_view", [
    pytest.param(view(), id="§3.3 no Range: the complete response is needed"),
    pytest.param(view(range="bytes=4-8"), id="§3.3 a range past the stored one"),
    pytest.param(view(range="bytes=0-1,3-4"), id="several ranges"),
    pytest.param(view(range="bytes=0-2", if_range='"other"'), id="If-Range fails: the complete response"),
    pytest.param(view("HEAD", range="bytes=0-2"), id="HEAD needs the complete response's headers"),
])
def test_otherwise_forwarded_as_partial(request_view: RequestView) -> None:
    stored = piece(0, 6)
    decision = POLICY.decide_request(request_view, (stored, "memory"), now=NOW + 1)
    assert isinstance(decision, Forward) and decision.fwd == "partial"
    assert decision.stored is None and decision.partial is stored
    assert POLICY.plain_hit(stored, NOW + 1) is None  # never a plain hit


def combine(stored: CachedEntry, start: int, stop: int, etag: str = '"e"') -> CachedEntry | None:
    forward = POLICY.decide_request(view(range=f"bytes={start}-{stop - 1}"), (stored, "memory"), now=NOW + 1)
    assert isinstance(forward, Forward)
    decision = POLICY.decide_response(
        view(range=f"bytes={start}-{stop - 1}"), forward, 206,
        [("date", DATE), ("cache-control", "max-age=60"), ("etag", etag),
         ("content-range", f"bytes {start}-{stop - 1}/10"), ("content-length", str(stop - start))],
        now=NOW + 1, request_time=NOW + 1, rule=None)
    assert isinstance(decision, Buffer)
    return POLICY.responses.complete(decision.plan, BODY[start:stop], ())


def test_pieces_with_one_strong_validator_combine() -> None:
    # §3.4 / RFC 9110 §15.3.7.3: "If the union consists of the entire range of the
    # representation, then the client MUST process the combined response as if it were a
    # complete 200 (OK) response, including a Content-Length header field".
    whole = combine(piece(0, 6), 4, 10)
    assert whole is not None and whole.status == 200 and whole.body == BODY
    assert dict(whole.headers)["content-length"] == "10" and "content-range" not in dict(whole.headers)
    longer = combine(piece(0, 3), 3, 7)
    assert longer is not None and longer.status == 206 and longer.body == BODY[:7]
    assert dict(longer.headers)["content-range"] == "bytes 0-6/10"


@pytest.mark.parametrize("stored, start, stop, etag", [
    pytest.param(piece(0, 6, etag='"old"'), 6, 10, '"e"', id="another validator: the new piece alone"),
    pytest.param(piece(0, 6, etag='W/"e"'), 6, 10, 'W/"e"', id="a weak validator never combines"),
    pytest.param(piece(0, 3), 5, 10, '"e"', id="not contiguous: the new piece alone"),
])
def test_pieces_that_do_not_combine(stored: CachedEntry, start: int, stop: int, etag: str) -> None:
    entry = combine(stored, start, stop, etag)
    assert entry is not None and entry.status == 206 and entry.body == BODY[start:stop]


def test_a_truncated_piece_is_not_stored() -> None:
    plan = analyse(206, [("content-range", "bytes 0-3/10")])
    assert isinstance(plan, StorePlan) and POLICY.responses.complete(plan, b"01", ()) is None


# ------------------------------------------------------------------------- end to end, in process


def test_ranges_are_stored_served_and_combined(make: Make, path: str) -> None:
    h = make()
    url = f"{path}?cc=max-age%3D60&etag=1&ranges=1&size=100"
    first = h.get(url, range="bytes=0-49")
    assert first.status == 206 and "stored" in first.cache_status
    inner = h.get(url, range="bytes=10-19")
    assert inner.status == 206 and inner.hit and inner.body == first.body[10:20]
    assert inner.headers["content-range"] == "bytes 10-19/100"
    rest = h.get(url, range="bytes=50-99")
    assert rest.status == 206 and "fwd=partial" in rest.cache_status
    whole = h.get(url)  # the two halves combined: a complete 200 from the cache
    assert whole.status == 200 and whole.hit and whole.body == first.body + rest.body
    assert h.calls(path) == 2


def test_a_request_without_range_is_not_served_a_piece(make: Make, path: str) -> None:
    h = make()
    url = f"{path}?cc=max-age%3D60&etag=1&ranges=1&size=100"
    h.get(url, range="bytes=0-9")
    full = h.get(url)
    assert full.status == 200 and len(full.body) == 100 and "fwd=partial" in full.cache_status
    assert h.get(url).hit and h.get(url, range="bytes=90-99").body == full.body[90:]
