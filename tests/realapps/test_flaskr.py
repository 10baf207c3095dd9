"""Flask's tutorial app, flaskr (factory, raw sqlite3, blueprints, session login, flashed
messages), served by ``scalekit serve 'tests.realapps.flaskr:create_app({...})'`` under each
WSGI server serve offers, with a cache rule on the index. Three browsers: alice and bob sign
in, carol does not; nobody's page, name or message reaches another."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from .flaskr.db import create_tables
from .support import WSGI_SERVERS, Served, browser, serving

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=WSGI_SERVERS)
def flaskr(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    database = tmp_path_factory.mktemp("flaskr") / "flaskr.sqlite"
    create_tables(str(database))
    target = f"tests.realapps.flaskr:create_app({{'DATABASE': {str(database)!r}, 'SECRET_KEY': 'realapps'}})"
    with serving(target, request.param, args=["--threads", "4"]) as served:
        yield served


def sign_up(client: httpx.Client, name: str) -> None:
    form = {"username": name, "password": f"{name}-password"}
    assert client.post("/auth/register", data=form).status_code == 302
    assert client.post("/auth/login", data=form).headers["location"] == "/"


def user_in_nav(page: str) -> str | None:
    match = re.search(r'<span class="user">([^<]*)</span>', page)
    return match.group(1) if match else None


def test_flaskr_pages_stay_with_their_user_and_writes_show_at_once(flaskr: Served) -> None:
    with browser(flaskr) as alice, browser(flaskr) as bob, browser(flaskr) as carol:
        sign_up(alice, "alice")
        sign_up(bob, "bob")
        # The anonymous index is cached (flaskr reads the session on every request: Vary: Cookie).
        carol.get("/")
        assert "hit" in carol.get("/").headers["cache-status"]

        # Signed-in pages: each their own, whatever was stored before or after them.
        for _ in range(2):
            assert user_in_nav(alice.get("/").text) == "alice"
            assert user_in_nav(bob.get("/").text) == "bob"
            assert user_in_nav(carol.get("/").text) is None

        # A write through raw sqlite3: the view invalidates the index's tag after committing,
        # so the cached anonymous index shows the post at once (table tracking cannot see it).
        created = alice.post("/create", data={"title": "Alice writes", "body": "hello from alice"})
        assert created.status_code == 302
        index = carol.get("/").text
        assert "Alice writes" in index and "Edit" not in index and user_in_nav(index) is None
        assert 'href="/1/update"' in alice.get("/").text  # only the author gets the Edit link
        assert 'href="/1/update"' not in bob.get("/").text

        # A flashed message is one user's: bob's error never reaches carol or alice.
        wrong = bob.post("/auth/login", data={"username": "bob", "password": "nope"})
        assert "Incorrect password." in wrong.text
        for other in (carol, alice):
            assert "Incorrect password." not in other.get("/auth/login").text
            assert "Incorrect password." not in other.get("/").text


def test_the_allowed_hosts_warning_was_said_once(flaskr: Served) -> None:
    # Not in serve's own process, which imports the app too, and once in the one that serves.
    assert flaskr.log().count("allowed_hosts is '*'") == 1, flaskr.log()
