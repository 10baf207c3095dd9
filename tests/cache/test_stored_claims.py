"""Cache-Status says ``stored`` (RFC 9211 §2.6) only when some tier keeps the response: a page
larger than every enabled tier's ``max_entry_bytes`` (the memory tier's 1 MiB by default, with
the disk tier off and no Redis) is not kept, so the header must not claim it, request after
request. With the disk tier on, the same page is kept, and the claim is true."""

from __future__ import annotations

from typing import Any

import httpx

import scalekit

PAGE = b"x" * (2 * 1024 * 1024)   # above the memory tier's default max_entry_bytes (1 MiB)


def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60"),
                              ("Content-Length", str(len(PAGE)))])
    return [PAGE]


def statuses(tmp_path: Any, disk: bool) -> list[str]:
    cache: dict[str, Any] = {"disk": {"enabled": disk}}
    app = scalekit.wrap(page, pool=False, metrics=False, cdn=False, allowed_hosts=["shop.test"],
                        state_dir=str(tmp_path), cache=cache)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            return [client.get("/big").headers["cache-status"] for _ in range(2)]
    finally:
        app.runtime.close()


def test_a_page_no_tier_can_hold_is_never_claimed_stored(tmp_path: Any) -> None:
    first, second = statuses(tmp_path, disk=False)
    assert "stored" not in first and "stored" not in second, (first, second)


def test_a_page_the_disk_tier_holds_is_stored_and_hit(tmp_path: Any) -> None:
    first, second = statuses(tmp_path, disk=True)
    assert "stored" in first and "; hit" in second, (first, second)
