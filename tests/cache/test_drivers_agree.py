"""Differential property: the WSGI and ASGI shells give identical answers (status, headers,
body) to the same requests against the same origin, because every decision is the policy's."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cache.harness import ASGIHarness, Reply, WSGIHarness

SCRIPTS = ["cc=max-age%3D60", "cc=max-age%3D60&etag=1", "cc=no-cache&etag=1", "cc=private",
           "cc=max-age%3D60&vary=Accept-Language", "cc=max-age%3D10%2C%20stale-if-error%3D60",
           "rule=30", "cc=no-store", "cc=max-age%3D60&size=50"]
REQUESTS = st.tuples(
    st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    st.sampled_from(["/a", "/b"]),
    st.sampled_from(SCRIPTS),
    st.fixed_dictionaries({}, optional={
        "accept-language": st.sampled_from(["en", "fr"]),
        "if-none-match": st.sampled_from(['"a-v1"', '"b-v1"', '"x"']),
        "range": st.sampled_from(["bytes=0-3", "bytes=100-"]),
        "cache-control": st.sampled_from(["max-age=0", "only-if-cached", "no-store"]),
    }),
    st.sampled_from([0, 0, 5, 30, 100]),
)


def comparable(reply: Reply) -> tuple[int, list[tuple[str, str]], bytes]:
    return reply.status, sorted(reply.headers.items()), reply.body


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(REQUESTS, min_size=1, max_size=8))
def test_wsgi_and_asgi_answer_alike(requests: list[tuple[str, str, str, dict[str, str], int]]) -> None:
    wsgi, asgi = WSGIHarness(), ASGIHarness()
    try:
        for method, path, script, headers, seconds in requests:
            for harness in (wsgi, asgi):
                harness.clock.advance(seconds)
            replies = [comparable(h.request(method, f"{path}?{script}", dict(headers))) for h in (wsgi, asgi)]
            assert replies[0] == replies[1]
    finally:
        wsgi.close()
        asgi.close()
