"""FastAPI's OAuth2 + JWT tutorial app, served by ``scalekit serve`` under each ASGI server it
offers, with a cache rule covering every path: each user's token-bound answers are theirs
alone, a bad token is refused every time, and the public page is cached."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .support import ASGI_SERVERS, Served, browser, serving

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=ASGI_SERVERS)
def oauth(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serving("tests.realapps.oauth.app:app", request.param) as served:
        yield served


def signed_in(client: httpx.Client, name: str) -> None:
    response = client.post("/token", data={"username": name, "password": f"{name}-secret"})
    assert response.status_code == 200, response.text
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


def test_token_bound_answers_stay_with_their_bearer(oauth: Served) -> None:
    with browser(oauth) as alice, browser(oauth) as bob, browser(oauth) as mallory:
        mallory.get("/")
        assert "hit" in mallory.get("/").headers["cache-status"]
        assert mallory.post("/token", data={"username": "alice", "password": "guess"}).status_code == 401
        signed_in(alice, "alice")
        signed_in(bob, "bob")
        for _ in range(2):
            for client, name in ((alice, "alice"), (bob, "bob")):
                me = client.get("/users/me/")
                assert me.json()["username"] == name
                assert "hit" not in me.headers.get("cache-status", "")
                assert client.get("/users/me/items/").json() == [{"item_id": "Foo", "owner": name}]
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                refused = mallory.get("/users/me/", headers=headers)
                assert refused.status_code == 401 and "alice" not in refused.text and "bob" not in refused.text


def test_the_allowed_hosts_warning_was_said_once(oauth: Served) -> None:
    # Not in serve's own process, which imports the app too, and once in the one that serves.
    assert oauth.log().count("allowed_hosts is '*'") == 1, oauth.log()
