"""The CDN layer remembers the responses its stamp leaves unchanged (scalekit/cdn/unchanged.py).

The memo's key leaves out the values of Age, ETag, Content-Length, Cache-Status, Date and
Last-Modified, and the request's path and tags where no rule or surrogate key reads them:
hypothesis holds the stamp to that (two responses with one key are stamped alike); the layer
tests show a remembered response still leaves with its own values, and that everything the key
holds (the Authorization of the request, a rule's path, the tags) still changes a stamp; and
request sequences through the layer with its memo and without it are answered byte for byte alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import scalekit
from scalekit.cdn.config import CDNConfig
from scalekit.cdn.etag import body_etag
from scalekit.cdn.policy import Stamper
from scalekit.cdn.unchanged import UNREAD_VALUES, UnchangedStamps
from tests.cdn.test_layer import Driver, Reply
from tests.cdn.test_properties import configs, optional_fields, tag_text

unread_values = st.fixed_dictionaries({}, optional={
    "age": st.sampled_from(["0", "12", "x"]),
    "etag": st.sampled_from(['"a"', 'W/"b"', "junk"]),
    "content-length": st.sampled_from(["0", "2048", "12x"]),
    "cache-status": st.sampled_from(["scalekit; hit", "scalekit; fwd=uri-miss; stored; ttl=59"]),
    "date": st.sampled_from(["Thu, 01 Jan 2099 00:00:00 GMT", "yesterday"]),
    "last-modified": st.sampled_from(["Thu, 01 Jan 2000 00:00:00 GMT", ""]),
})


def _spelled(name: str, title: bool) -> str:
    return name.title() if title else name


# The fields whose values the stamp is held independent of below; the memo's set is this one.
VALUES_NOT_READ = frozenset({"age", "etag", "content-length", "cache-status", "date", "last-modified"})


def _masked(lines: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    return [(name, None if name in VALUES_NOT_READ else value) for name, value in lines]


def test_the_memo_leaves_out_the_values_this_file_shows_the_stamp_never_reads() -> None:
    assert UNREAD_VALUES == VALUES_NOT_READ


# Half of them without rules: a rule for the method takes the request off the memo's path.
memo_configs = st.tuples(configs, st.booleans()).map(lambda pair: pair[0] if pair[1] else replace(pair[0], rules=()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=memo_configs, fields=optional_fields, unread=unread_values, other=st.data(),
       status=st.sampled_from([200, 200, 200, 203, 304, 404, 500, 503]),
       method=st.sampled_from(["GET", "GET", "HEAD", "POST"]),
       authorization=st.booleans(), cookie=st.booleans(), title=st.booleans(),
       tags=st.just(set()) | st.sets(tag_text, max_size=3))
def test_two_responses_with_one_key_are_stamped_alike(
        config: CDNConfig, fields: dict[str, str], unread: dict[str, str], other: st.DataObject,
        status: int, method: str, authorization: bool, cookie: bool, title: bool, tags: set[str]) -> None:
    stamper = Stamper(config)
    memo = UnchangedStamps(stamper, encoded=False)
    first = [(_spelled(n, title), v) for n, v in [("content-type", "text/html"), *fields.items(), *unread.items()]]
    # The same lines with other values where the key leaves them out, to another path.
    second = [(name, other.draw(st.sampled_from(["0", "7", "junk", '"z"', ""])) if name.lower() in VALUES_NOT_READ
               else value) for name, value in first]
    other_tags = other.draw(st.sets(tag_text, max_size=3)) if stamper.dialect is None else tags
    key = memo.key(method, status, authorization, cookie, tags, first)
    if key is None:  # a rule for the method (reads the path), or tags for surrogate keys
        assert method in stamper.rule_methods or (tags and stamper.dialect is not None)
        return
    assert memo.key(method, status, authorization, cookie, other_tags, second) == key
    lowered = [[(n.lower(), v) for n, v in lines] for lines in (first, second)]
    one, two = (stamper.stamp(method, path, authorization, status, list(lines), stamp_tags, has_cookie=cookie)
                for path, lines, stamp_tags in (("/x/y", lowered[0], tags), ("/other/z", lowered[1], other_tags)))
    # Stamped alike: the same lines out but for those values, the same ETag decision; so one
    # left unchanged (what the memo remembers) means the other is too.
    assert _masked(one.headers) == _masked(two.headers)
    assert one.generate_etag == two.generate_etag
    assert (one.headers == lowered[0]) == (two.headers == lowered[1])


class CountedStamps:
    """Counts Stamper.stamp calls (the memo is what spares them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        stamp = Stamper.stamp

        def counted(stamper: Stamper, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return stamp(stamper, *args, **kwargs)

        monkeypatch.setattr(Stamper, "stamp", counted)


@pytest.fixture(params=["wsgi", "asgi"])
def driver(request: pytest.FixtureRequest) -> Driver:
    return Driver(request.param)


def _page(number: int) -> Reply:
    body = f"<p>page {number}</p>".encode() * (number + 1)
    return Reply(headers=[("Content-Type", "text/html"), ("Cache-Control", "public, max-age=60"),
                          ("ETag", body_etag(body)), ("Date", f"Thu, 01 Jan 2099 00:00:{number:02d} GMT")],
                 chunks=[body])


def test_a_remembered_response_leaves_with_its_own_values(driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = CountedStamps(monkeypatch)
    current = _page(1)
    wrapped = driver.wrap(lambda calls: _serving(driver.kind, lambda: current))
    for number in range(1, 6):
        current = _page(number)
        result = driver.request(wrapped)
        assert result.body == current.body
        assert result.headers["etag"] == dict(current.headers)["ETag"]
        assert result.headers["content-length"] == str(len(current.body))
        assert result.headers["date"] == dict(current.headers)["Date"]
        assert result.headers["cache-control"] == "public, max-age=60"
    assert stamps.calls == 1  # the four after the first were known unchanged


def test_the_same_lines_answering_a_request_with_authorization_are_made_private(
        driver: Driver, monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = CountedStamps(monkeypatch)
    wrapped = driver.wrap(_page(1))
    assert driver.request(wrapped).headers["cache-control"] == "public, max-age=60"
    private = driver.request(wrapped, headers=[("Authorization", "Bearer alice")])
    assert private.headers["cache-control"] == "private, max-age=60"
    assert driver.request(wrapped).headers["cache-control"] == "public, max-age=60"
    assert stamps.calls == 2


def test_a_rule_by_path_still_applies_after_the_same_lines_were_remembered_elsewhere(driver: Driver) -> None:
    wrapped = driver.wrap(_page(1), rules=[{"path": "/blog/**", "policy": "no-store", "override": True}])
    assert driver.request(wrapped, path="/other").headers["cache-control"] == "public, max-age=60"
    assert driver.request(wrapped, path="/blog/1").headers["cache-control"] == "no-store"
    assert driver.request(wrapped, path="/other").headers["cache-control"] == "public, max-age=60"


def test_tags_still_become_surrogate_keys_after_a_response_without_them(driver: Driver) -> None:
    reply = _page(1)
    wrapped = driver.wrap(reply, surrogate_keys="fastly")
    assert "surrogate-key" not in driver.request(wrapped).headers
    reply.tags = ("product:42",)
    assert driver.request(wrapped).headers["surrogate-key"] == "product:42"


def test_a_conditional_request_is_still_answered_304_from_a_remembered_response(driver: Driver) -> None:
    reply = _page(1)
    wrapped = driver.wrap(reply)
    etag = driver.request(wrapped).headers["etag"]
    assert driver.request(wrapped, headers=[("If-None-Match", etag)]).status == 304


def test_the_memo_is_bounded_and_skips_long_lines() -> None:
    memo = UnchangedStamps(Stamper(CDNConfig()), encoded=True, max_entries=8, max_text_chars=100)
    for number in range(50):
        memo.add(memo.key("GET", 200, False, False, (), [(b"x-request-id", str(number).encode())]))  # type: ignore[arg-type]
    assert len(memo) <= 8
    long_key = memo.key("GET", 200, False, False, (), [(b"x-echo", b"a" * 200)])
    assert long_key is not None
    memo.add(long_key)
    assert not memo.holds(long_key)
    assert memo.key("GET", 200, False, False, (), [(b"only-a-name",)]) is None  # type: ignore[list-item]
    assert memo.key("GET", 200, False, False, (), iter([(b"x", b"y")])) is None  # read once: the stamp's
    unhashable = memo.key("GET", 200, False, False, (), [(b"x", [b"list"])])
    assert unhashable is not None and not memo.holds(unhashable)
    memo.add(unhashable)  # ignored, not raised


def test_asgi_header_lines_sent_as_an_iterator_leave_whole() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        lines = [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60"), (b"etag", b'"v1"')]
        await send({"type": "http.response.start", "status": 200, "headers": iter(lines)})
        await send({"type": "http.response.body", "body": b"hi"})

    driver = Driver("asgi")
    wrapped = driver.wrap(lambda calls: app)
    for _ in range(2):
        result = driver.request(wrapped)
        assert result.headers == {"content-type": "text/plain", "cache-control": "max-age=60", "etag": '"v1"'}
        assert result.body == b"hi"


def _serving(kind: str, reply_now: Any) -> Any:
    """An app answering with whatever ``reply_now()`` returns at the time of the request."""
    if kind == "wsgi":
        def app(environ: dict[str, Any], start_response: Any) -> Any:
            reply = reply_now()
            scalekit.tag(*reply.tags)
            start_response(f"{reply.status} X", reply.all_headers())
            return list(reply.chunks)
        return app

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reply = reply_now()
        scalekit.tag(*reply.tags)
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(n.lower().encode(), v.encode()) for n, v in reply.all_headers()]})
        await send({"type": "http.response.body", "body": reply.body})
    return asgi_app


class _Forgetful:
    """A memo that knows nothing: the layer stamps every response, as before the memo."""

    def key(self, *args: Any) -> None:
        return None

    def holds(self, key: None) -> bool:
        return False

    def learn(self, *args: Any) -> None:
        pass


def _cdn_layer(wrapped: Any) -> Any:
    from scalekit.cdn.asgi_shell import ASGICDN
    from scalekit.cdn.wsgi_shell import WSGICDN

    node = wrapped.chain
    for _ in range(6):
        target = getattr(node, "__self__", node)
        if isinstance(target, (WSGICDN, ASGICDN)):
            return target
        node = getattr(target, "inner", None) or getattr(target, "app", None)
    raise AssertionError("no CDN layer in the chain")


exchanges = st.lists(st.tuples(
    st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    st.sampled_from(["/page", "/blog/1", "/page"]),
    st.sampled_from([(), (("Authorization", "Bearer a"),), (("Cookie", "s=1"),), (("If-None-Match", '"v1"'),)]),
    st.sampled_from([200, 200, 404, 500]),
    st.integers(0, 2),  # which of the example's few responses (a route sends the same lines)
    st.integers(0, 3),  # this response's values of the fields whose values the stamp never reads
    st.sampled_from([(), (), ("product:1",)]),
), min_size=1, max_size=10)
# A route's lines (the memo's use): the same fields, and the same fields whose values the
# stamp never reads, with other values each time.
route_lines = optional_fields.filter(lambda f: "surrogate-key" not in f and "cache-tag" not in f)
layer_configs = st.fixed_dictionaries({}, optional={
    "default_policy": st.sampled_from(["page", "api", "immutable-asset"]),
    "rules": st.just([{"path": "/blog/**", "policy": "no-store", "override": True}]),
    "surrogate_keys": st.sampled_from(["fastly", "none"]),
    "compression": st.booleans(),
})


_SHARED = ({"cache-control": "public, max-age=60", "etag": '"v1"'}, {"age": "1", "date": "d"})
_ALIKE = (_SHARED, _SHARED, _SHARED)


def _asked(*requests: tuple[str, str, tuple[tuple[str, str], ...], tuple[str, ...]]) -> list[Any]:
    """Exchanges of the one shared route, 200 each: (method, path, request headers, tags)."""
    return [(method, path, headers, 200, 0, index, tags)
            for index, (method, path, headers, tags) in enumerate(requests)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["wsgi", "asgi"]), config=layer_configs, sequence=exchanges,
       responses=st.tuples(*[st.tuples(route_lines, unread_values)] * 3))
@example(kind="wsgi", config={}, responses=_ALIKE,  # Authorization makes the same lines private
         sequence=_asked(("GET", "/page", (), ()), ("GET", "/page", (("Authorization", "Bearer a"),), ())))
@example(kind="asgi", config={"rules": [{"path": "/blog/**", "policy": "no-store", "override": True}]},
         responses=_ALIKE, sequence=_asked(("GET", "/page", (), ()), ("GET", "/blog/1", (), ())))
@example(kind="wsgi", config={"surrogate_keys": "fastly"}, responses=_ALIKE,
         sequence=_asked(("GET", "/page", (), ()), ("GET", "/page", (), ("product:1",))))
@example(kind="asgi", config={}, responses=_ALIKE,  # a matching If-None-Match is answered 304
         sequence=_asked(("GET", "/page", (), ()), ("GET", "/page", (("If-None-Match", '"v1"'),), ())))
def test_the_layer_answers_alike_with_and_without_the_memo(
        kind: str, config: dict[str, Any], sequence: list[Any],
        responses: tuple[tuple[dict[str, str], dict[str, str]], ...]) -> None:
    """The same requests, answered by the same app responses, through the layer with its memo
    and through one that stamps every response: the same status, lines and body each time."""
    driver = Driver(kind)
    current: list[Reply] = []
    remembering = driver.wrap(lambda calls: _serving(kind, lambda: current[0]), **config)
    stamping = driver.wrap(lambda calls: _serving(kind, lambda: current[0]), **config)
    _cdn_layer(stamping).unchanged_stamps = _Forgetful()
    for method, path, request_headers, status, which, values, tags in sequence:
        body = b"<p>page</p>"
        fields, unread = responses[which]
        lines = [("Content-Type", "text/html"), *fields.items(),
                 *[(name, f"{value}{values}") for name, value in unread.items()]]
        current[:] = [Reply(status=status, headers=lines, chunks=[body], content_length=False, tags=tags)]
        answers = [driver.request(app, method, path, list(request_headers)) for app in (remembering, stamping)]
        assert answers[0].status == answers[1].status
        assert answers[0].raw_headers == answers[1].raw_headers
        assert answers[0].body == answers[1].body
