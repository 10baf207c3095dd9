"""RFC 9111 behaviour end to end in process (WSGI and ASGI): statuses, Age, stale when the
origin cannot be reached. The sans-I/O rows behind each are in test_policy.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.cache.harness import Harness

Make = Callable[..., Harness]


@pytest.mark.parametrize("status", [400, 303, 500, 503, 599])
def test_any_final_status_with_explicit_freshness_is_stored(make: Make, path: str, status: int) -> None:
    # RFC 9111 §3: explicit freshness makes any final status storable.
    h = make()
    url = f"{path}?cc=max-age%3D60&status={status}"
    first = h.get(url)
    assert first.status == status and "stored" in first.cache_status
    second = h.get(url)
    assert second.status == status and second.hit and second.body == first.body
    assert h.calls(path) == 1


def test_server_errors_are_never_stored_behind_the_switch(make: Make, path: str) -> None:
    h = make(store_server_errors=False)
    for _ in range(2):
        assert not h.get(f"{path}?cc=max-age%3D60&status=503").hit
    h.get(f"{path}/ok?cc=max-age%3D60&status=404")
    assert h.get(f"{path}/ok?cc=max-age%3D60&status=404").hit


def test_a_list_valued_age_uses_its_first_member(make: Make, path: str) -> None:
    # RFC 9111 §5.1: "Age: 7200, 0" is 7200 s old: stale against max-age=3600, not fresh.
    h = make()
    url = f"{path}?cc=max-age%3D3600&age=7200,%200"
    first = h.get(url)
    assert first.headers["age"] == "7200"
    assert not h.get(url).hit
    assert h.calls(path) == 2


def test_store_server_errors_is_validated_at_start_up() -> None:
    from scalekit.config import load_config
    from scalekit.errors import ConfigError

    assert load_config(environ={}, cwd="/nonexistent").cache.store_server_errors is True
    with pytest.raises(ConfigError, match="cache.store_server_errors"):
        load_config(environ={"SCALEKIT_CACHE_STORE_SERVER_ERRORS": "sometimes"}, cwd="/nonexistent")


def test_stale_when_the_app_raises(make: Make, path: str) -> None:
    # RFC 9111 §4.2.4: an origin that raised could not be reached; a stale entry nothing
    # forbids is served (no stale-if-error needed), and Cache-Status says why.
    h = make()
    url = f"{path}?cc=max-age%3D10&etag=1"
    good = h.get(url)
    h.advance(20)
    h.fail("raise")
    try:
        reply = h.get(url)
    finally:
        h.fail("")
    assert reply.status == 200 and reply.body == good.body
    assert "fwd=stale" in reply.cache_status and "detail=origin-unreachable" in reply.cache_status


@pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=10"])
def test_no_stale_when_a_directive_forbids_it(make: Make, path: str, directive: str) -> None:
    # s-maxage carries proxy-revalidate's semantics for a shared cache (§5.2.2.10).
    h = make()
    url = f"{path}?cc=max-age%3D10%2C%20{directive.replace('=', '%3D')}&etag=1&s={directive}"
    h.get(url)
    h.advance(20)
    h.fail("raise")
    try:
        with pytest.raises(RuntimeError, match="origin failure"):
            h.get(url)
    finally:
        h.fail("")
