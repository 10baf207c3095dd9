"""The plain-hit fast path (``scalekit/cache/hot.py``) answers exactly what the full path would.

- The policy's ``plain_hit`` agrees with ``decide_request`` for every entry and instant, and
  its ``(Age, ttl)`` hold until the ``until`` it gives (the memo's reuse window).
- A state machine of requests, fractional clock advances, tag and URI invalidations and L1
  evictions compares each early answer of both shells with the full path's answer to the same
  request at the same instant: a memoised answer never outlives what it was built from.
- Plain hits are counted exactly, by a tally flushed when the registry is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule
from prometheus_client import REGISTRY

from scalekit.cache import layer
from scalekit.cache.config import CacheConfig
from scalekit.cache.entry import CachedEntry
from scalekit.cache.policy import CachePolicy, RequestView, Serve
from scalekit.cache.tiers import build_generations
from scalekit.metrics import instruments
from tests.cache.origin_app import (
    START_TIME,
    FakeClock,
    Origin,
    make_runtime,
    origin_asgi,
    origin_wsgi,
)

POLICY = CachePolicy(CacheConfig(), allowed_hosts=("*",))
EPOCH = 1_700_000_000.0

times = st.floats(min_value=-5.0, max_value=400.0, allow_nan=False)
entries = st.builds(
    lambda produced, initial, lifetime, revalidate, vary: CachedEntry(
        status=200, headers=(("content-type", "text/plain"), ("content-length", "2")), body=b"hi",
        request_time=EPOCH + produced, response_time=EPOCH + produced,
        corrected_initial_age_seconds=initial, freshness_lifetime_seconds=lifetime,
        requires_revalidation=revalidate, vary=("accept-language",) if vary else ()),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.one_of(st.just(0.0), st.floats(min_value=0, max_value=50, allow_nan=False)),
    st.one_of(st.sampled_from([0.0, 1.0, 2.5, 60.0]), st.floats(min_value=0, max_value=300, allow_nan=False)),
    st.booleans(), st.booleans())


def plain_view(method: str = "GET") -> RequestView:
    return RequestView(method, "http", "a.test", "/p", "", {}.get, False)


@settings(max_examples=500)
@given(entry=entries, offset=times, method=st.sampled_from(["GET", "HEAD"]))
def test_plain_hit_is_what_decide_request_serves(entry: CachedEntry, offset: float, method: str) -> None:
    now = EPOCH + offset
    answer = POLICY.plain_hit(entry, now)
    decision = POLICY.decide_request(plain_view(method), (entry, "memory"), now=now, miss="miss")
    if answer is None:
        assert not (isinstance(decision, Serve) and decision.outcome == "hit" and not entry.vary), decision
        return
    age, ttl, _ = answer
    assert isinstance(decision, Serve) and decision.outcome == "hit"
    assert decision.status == entry.status
    assert decision.body == (b"" if method == "HEAD" else entry.body)
    assert decision.headers == entry.headers + POLICY.responses.plain_hit_headers("memory", age, ttl)


@st.composite
def fresh_moments(draw: st.DrawFn) -> tuple[CachedEntry, float]:
    """A plain entry and an instant at which it is fresh."""
    produced = draw(st.floats(min_value=0, max_value=100, allow_nan=False))
    initial = draw(st.one_of(st.just(0.0), st.floats(min_value=0, max_value=50, allow_nan=False)))
    extra = draw(st.one_of(st.sampled_from([0.5, 1.0, 2.0, 60.0]),
                           st.floats(min_value=0.001, max_value=300, allow_nan=False)))
    resident = draw(st.floats(min_value=-1.0, max_value=extra, exclude_max=True, allow_nan=False))
    entry = CachedEntry(status=200, headers=(), body=b"hi", request_time=EPOCH + produced,
                        response_time=EPOCH + produced, corrected_initial_age_seconds=initial,
                        freshness_lifetime_seconds=initial + extra)
    return entry, EPOCH + produced + resident


@settings(max_examples=500)
@given(moment=fresh_moments(), fraction=st.floats(min_value=0, max_value=1, exclude_max=True))
def test_age_and_ttl_hold_until_the_window_ends(moment: tuple[CachedEntry, float], fraction: float) -> None:
    entry, now = moment
    assume(POLICY.responses.current_age(entry, now) < entry.freshness_lifetime_seconds)  # rounding
    answer = POLICY.plain_hit(entry, now)
    assert answer is not None
    age, ttl, until = answer
    assert until - now <= 1.0
    later = now + (until - now) * fraction
    if later < until:
        assert POLICY.plain_hit(entry, later)[:2] == (age, ttl)  # type: ignore[index]


# ------------------------------------------------------------------ both shells, differentially

PATHS = ("/p0", "/p1")
CONTROLS = ("cc=max-age=1&tag=t", "cc=max-age=3&tag=t", "cc=max-age=60", "cc=max-age=2&age=1",
            "cc=no-cache&etag=1", "cc=max-age=60&vary=accept-language", "cc=max-age=30&lm=1")


class Followed:
    """Generations that follow a log, as the fleet's do: while the log is not heard, no entry
    is current, tagged or not (a URI invalidation may have been missed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trusted = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def is_current(self, stamp: tuple[tuple[str, int], ...]) -> bool:
        return self.trusted and bool(self.inner.is_current(stamp))


class EarlyMatchesFull(RuleBasedStateMachine):
    kind = "wsgi"

    def __init__(self) -> None:
        super().__init__()
        # Off the whole second: Age and ttl then hold for a while, and answers are reused.
        self.clock = FakeClock(START_TIME + 0.125)
        self.origin = Origin(self.clock)
        self.runtime = make_runtime(self.clock, coalesce=False)
        self.generations = Followed(build_generations(self.runtime))
        self.runtime.services["cache.core"] = layer.CacheCore(self.runtime, generations=self.generations)
        self.loop = asyncio.new_event_loop() if self.kind == "asgi" else None
        if self.kind == "wsgi":
            self.cache: Any = layer.wrap_wsgi(origin_wsgi(self.origin), self.runtime)
        else:
            self.cache = layer.wrap_asgi(origin_asgi(self.origin), self.runtime)
        # Cacheable from the start (one untagged, one tagged): hits are what the machine is about.
        self.queries: dict[str, str] = {"/p0": "cc=max-age=60", "/p1": "cc=max-age=3&tag=t"}

    def teardown(self) -> None:
        self.runtime.close()
        if self.loop is not None:
            self.loop.close()

    # -- requests, as each shell receives them
    def environ(self, method: str, path: str) -> dict[str, Any]:
        return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": self.queries.get(path, ""),
                "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "test"}

    def scope(self, method: str, path: str) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "scheme": "http", "server": ("test", 80),
                "query_string": self.queries.get(path, "").encode(), "headers": [(b"host", b"test")]}

    def full(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.kind == "wsgi":
            seen: dict[str, Any] = {}

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                seen["status"], seen["headers"] = int(status[:3]), headers

            body = self.cache.handle(self.environ(method, path), start_response)
            data = b"".join(body)
            getattr(body, "close", lambda: None)()
            return seen["status"], list(seen["headers"]), data
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        assert self.loop is not None
        self.loop.run_until_complete(self.cache.handle(self.scope(method, path), receive, send))
        return (sent[0]["status"], [(k.decode(), v.decode()) for k, v in sent[0]["headers"]],
                b"".join(m.get("body", b"") for m in sent[1:]))

    def early(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
        if self.kind == "wsgi":
            found = self.cache.serve_early(self.environ(method, path))
            if found is None:
                return None
            status, headers, body = found
            return int(status[:3]), headers, b"".join(body)
        found = self.cache.serve_early(self.scope(method, path))
        if found is None:
            return None
        start, body_message = found
        return (start["status"], [(k.decode(), v.decode()) for k, v in start["headers"]],
                body_message["body"])

    # -- rules
    @rule(path=st.sampled_from(PATHS), query=st.sampled_from(CONTROLS))
    def program(self, path: str, query: str) -> None:
        self.queries[path] = query

    @rule(method=st.sampled_from(["GET", "GET", "HEAD"]), path=st.sampled_from(PATHS))
    def request(self, method: str, path: str) -> None:
        calls = dict(self.origin.calls)
        early = self.early(method, path)
        if early is None:
            self.full(method, path)
            return
        assert self.origin.calls == calls  # a hit never reaches the origin
        status, headers, body = early
        assert any(name == "cache-status" and "; hit" in value for name, value in headers), headers
        # The same request, the same instant, the full path: the same answer, byte for byte.
        assert self.full(method, path) == (status, headers, body)
        assert self.origin.calls == calls

    @rule(seconds=st.sampled_from([0.25, 0.5, 0.999, 1.0, 1.75, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def invalidate_tag(self) -> None:
        self.runtime.invalidate(["t"])

    @rule(heard=st.booleans())
    def log_heard(self, heard: bool) -> None:
        self.generations.trusted = heard

    @rule(path=st.sampled_from(PATHS))
    def unsafe_method(self, path: str) -> None:
        if self.kind == "wsgi":
            body = self.cache(dict(self.environ("POST", path), **{"wsgi.input": None}),
                              lambda status, headers, exc_info=None: None)
            b"".join(body)
        else:
            self.full("POST", path)

    @rule(path=st.sampled_from(PATHS))
    def evict(self, path: str) -> None:
        key = self.cache.policy.keys.primary_key("http", "test", path, self.queries.get(path, ""))
        self.cache.store.memory.delete(key)


class AsgiEarlyMatchesFull(EarlyMatchesFull):
    kind = "asgi"


TestWsgiEarlyMatchesFull = EarlyMatchesFull.TestCase
TestWsgiEarlyMatchesFull.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestAsgiEarlyMatchesFull = AsgiEarlyMatchesFull.TestCase
TestAsgiEarlyMatchesFull.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


# ------------------------------------------------------------------ counting

def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_plain_hit_is_counted_when_the_registry_is_read() -> None:
    clock = FakeClock()
    origin = Origin(clock)
    runtime = make_runtime(clock, coalesce=False)
    try:
        cache = layer.wrap_wsgi(origin_wsgi(origin), runtime)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/counted", "QUERY_STRING": "cc=max-age=60",
                   "wsgi.url_scheme": "http", "HTTP_HOST": "test"}
        b"".join(cache(dict(environ), lambda *args: None))  # the miss that stores it
        hits = sample("scalekit_cache_requests_total", {"outcome": "hit"})
        lookups = sample("scalekit_cache_lookups_total", {"tier": "memory", "outcome": "hit"})
        for _ in range(37):
            assert cache.serve_early(dict(environ)) is not None
        assert sample("scalekit_cache_requests_total", {"outcome": "hit"}) == hits + 37
        assert sample("scalekit_cache_lookups_total", {"tier": "memory", "outcome": "hit"}) == lookups + 37
        assert cache.serve_early(dict(environ)) is not None
        assert sample("scalekit_cache_requests_total", {"outcome": "hit"}) == hits + 38
    finally:
        runtime.close()


def test_a_tally_flushes_what_it_counted_when_collected() -> None:
    added: list[int] = []
    tally = instruments.Tally((instruments.CACHE_STORES,), (added.append,))
    for _ in range(5):
        tally.tick()
    assert added == []
    list(instruments.CACHE_STORES.collect())
    assert added == [5]
    tally.tick()
    tally.flush()
    tally.flush()
    assert added == [5, 1]


DISRUPTIONS = ("invalidate_tag", "evict", "unsafe_method", "replace", "log_lost")


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("disruption", DISRUPTIONS)
def test_a_memoised_answer_is_not_reused_after(kind: str, disruption: str) -> None:
    """Each way an entry stops being servable, inside the memo's window: the next early answer
    is the full path's (here: none, or a new entry), never the memoised one."""
    machine = AsgiEarlyMatchesFull() if kind == "asgi" else EarlyMatchesFull()
    try:
        machine.program("/p0", "cc=max-age=60" if disruption == "log_lost" else "cc=max-age=60&tag=t")
        machine.full("GET", "/p0")  # the miss that stores it
        first = machine.early("GET", "/p0")
        assert first is not None and machine.early("GET", "/p0") == first  # memoised, reused
        if disruption == "replace":
            machine.cache.store.memory.delete(machine.cache.policy.keys.primary_key(
                "http", "test", "/p0", "cc=max-age=60&tag=t"))
            machine.full("GET", "/p0")  # stored again: a new entry, body "call=2"
        elif disruption == "log_lost":  # an untagged entry: only the generations' trust decides
            machine.log_heard(False)
        else:
            getattr(machine, disruption)(*(() if disruption == "invalidate_tag" else ("/p0",)))
        again = machine.early("GET", "/p0")
        assert again != first
        if again is not None:
            assert b"call=2" in again[2]
            assert machine.full("GET", "/p0") == again
    finally:
        machine.teardown()
