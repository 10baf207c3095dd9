"""The miss path reads a response's shape (its directives, Vary, length, validators, kept lines)
once per distinct header list: remembered shapes must decide exactly what a fresh analysis
decides, for any header list, request, rule and clock, the first time and every later time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cache.rules import ResponseRule
from scalekit.cache.storable import NotStorable, ShapeMemo, StoreSettings, analyse_response, plan_storing

NAMES = ["Cache-Control", "cache-control", "Expires", "Date", "Age", "Vary", "ETag", "Last-Modified",
         "Content-Length", "Content-Type", "Set-Cookie", "Surrogate-Control", "Surrogate-Key",
         "Connection", "X-Private", "CDN-Cache-Control", "Content-Range", "Cache-Tag"]
VALUES = ["max-age=60", "s-maxage=30, public", "no-store", "private", 'private="X-Private"',
          "no-cache", "must-revalidate, max-age=5", "stale-while-revalidate=30, max-age=1", "max-age=0",
          "Wed, 02 Dec 2026 18:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "0", "12", "2048",
          "Accept-Encoding", "*", '"v1"', "text/html", "text/event-stream", "a=b", "X-Private",
          "max-age=60, must-understand", "bytes 0-9/100", "product:1 list", "", "max-age=60, no-store"]
STATUSES = [200, 203, 204, 206, 301, 304, 404, 418, 500, 503, 599, 100]
HEADER = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES))
RULES = st.sampled_from([None, ResponseRule(ttl_seconds=30.0),
                         ResponseRule(ttl_seconds=10.0, public=True, stale_while_revalidate_seconds=5.0)])
SETTINGS = st.sampled_from([
    StoreSettings(),
    StoreSettings(heuristic_freshness=True, store_server_errors=False, max_body_bytes=100),
    StoreSettings(targeted_fields=("cdn-cache-control",), strip_targeted=True),
])

# One memo per settings for the whole run, so shapes remembered for one example's header list
# are looked up by every later one: a key that conflates two lists would decide wrongly.
SHARED: dict[StoreSettings, ShapeMemo] = {}


@settings(max_examples=400, deadline=None)
@given(status=st.sampled_from(STATUSES), headers=st.lists(HEADER, max_size=6), rule=RULES,
       store_settings=SETTINGS, cookie=st.booleans(), authorization=st.booleans(),
       took=st.sampled_from([0.0, 0.5, 2.0, 120.0]))
def test_a_remembered_shape_decides_what_a_fresh_analysis_decides(
        status: int, headers: list[tuple[str, str]], rule: ResponseRule | None, store_settings: StoreSettings,
        cookie: bool, authorization: bool, took: float) -> None:
    request = {"cookie": "a=b"} if cookie else {}
    request["accept-encoding"] = "gzip"
    now = 1_796_000_000.0

    def plan(memo: ShapeMemo) -> object:
        _fields, shape = memo.shape(status, list(headers))
        if isinstance(shape, NotStorable):
            return shape
        return plan_storing(shape, request.get, now=now, request_time=now - took, rule=rule,
                            settings=store_settings, authorization=authorization)

    fresh = analyse_response(status, list(headers), request.get, now=now, request_time=now - took,
                             rule=rule, settings=store_settings, authorization=authorization)
    memo = ShapeMemo(store_settings)
    shared = SHARED.setdefault(store_settings, ShapeMemo(store_settings))
    first, again, from_shared = plan(memo), plan(memo), plan(shared)
    assert first == fresh and again == fresh and from_shared == fresh  # NotStorable: the same reason


def test_the_memo_is_bounded_in_entries_and_keeps_no_long_text() -> None:
    memo = ShapeMemo(StoreSettings(), max_entries=8, max_text_chars=100)
    for index in range(50):
        memo.shape(200, [("cache-control", "max-age=60"), ("x-id", str(index))])
        assert len(memo.items) <= 8
    memo.items.clear()
    long_value = "x" * 200  # header values can echo client input
    fields, shape = memo.shape(200, [("cache-control", "max-age=60"), ("x-echo", long_value)])
    assert fields["x-echo"] == long_value and not isinstance(shape, NotStorable)
    assert not memo.items


@pytest.mark.parametrize("headers", [[("cache-control", None)], [("cache-control", "max-age=1"), ("x-n", 3)]])
def test_header_lines_that_are_not_text_are_analysed_without_the_memo(headers: list) -> None:
    """An app breaking PEP 3333 with a value that is not text gets what the analysis alone
    gives it, and nothing of it is remembered."""
    memo = ShapeMemo(StoreSettings())
    _fields, shape = memo.shape(200, headers)
    alone = analyse_response(200, headers, {}.get, now=0.0, request_time=0.0, rule=None, settings=StoreSettings())
    if isinstance(shape, NotStorable):
        assert shape == alone
    else:
        assert plan_storing(shape, {}.get, now=0.0, request_time=0.0, rule=None, settings=StoreSettings()) == alone
    assert not memo.items
