"""A Django project with admin, auth, sessions, messages and CSRF, scalekit installed the
middleware-only way with ``settings.SCALEKIT`` (its own Cache-Status name, a rule over every
path), served by ``scalekit serve mysite.wsgi:application`` / ``asgi:application`` under every
server serve offers. Two staff users and an anonymous browser, each with its own cookies: no
page, CSRF token or message reaches another, and the settings are the ones used."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import REPO_ROOT

from .support import ASGI_SERVERS, WSGI_SERVERS, Served, browser, csrf_field, serving

pytestmark = pytest.mark.server

TARGETS = [pytest.param(("tests.realapps.mysite.wsgi:application", server), id=f"wsgi-{server}")
           for server in WSGI_SERVERS] + [
          pytest.param(("tests.realapps.mysite.asgi:application", server), id=f"asgi-{server}")
          for server in ASGI_SERVERS]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mysite") / "db.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REALAPPS_MYSITE_DB": str(path)}
    subprocess.run([sys.executable, "-m", "tests.realapps.mysite.setup_db"], env=env, check=True,
                   cwd=REPO_ROOT, timeout=120)
    return path


@pytest.fixture(scope="module", params=TARGETS)
def mysite(request: pytest.FixtureRequest, database: Path,
    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    target, server = request.param
    copy = tmp_path_factory.mktemp("mysite-db") / "db.sqlite3"
    copy.write_bytes(database.read_bytes())  # each server its own data
    with serving(target, server, args=["--threads", "4"], env={"REALAPPS_MYSITE_DB": str(copy)}) as served:
        yield served


def admin_login(client: httpx.Client, name: str) -> None:
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 200 and "hit" not in page.headers.get("cache-status", "")
    response = client.post("/admin/login/?next=/admin/", data={
        "username": name, "password": f"{name}-password", "csrfmiddlewaretoken": csrf_field(page.text),
        "next": "/admin/"})
    assert response.status_code == 302 and response.headers["location"] == "/admin/", response.text[:500]


def page_user(html: str) -> str | None:
    match = re.search(r'<span class="user">([^<]*)</span>', html)
    return match.group(1) if match else None


def test_settings_scalekit_is_used_under_scalekit_serve(mysite: Served) -> None:
    with browser(mysite) as carol:
        carol.get("/public/")
        second = carol.get("/public/")
    assert second.headers["cache-status"].startswith("mysite; hit"), second.headers.get("cache-status")


def test_admin_sessions_csrf_tokens_and_messages_stay_with_their_user(mysite: Served) -> None:
    with browser(mysite) as alice, browser(mysite) as bob, browser(mysite) as carol:
        admin_login(alice, "alice")
        assert carol.get("/admin/").status_code == 302  # never alice's admin page
        admin_login(bob, "bob")
        for _ in range(2):
            for client, name in ((alice, "alice"), (bob, "bob")):
                home = client.get("/admin/")
                assert home.status_code == 200 and "Site administration" in home.text
                assert name in home.text and ({"alice", "bob"} - {name}).pop() not in home.text
            assert carol.get("/admin/").status_code == 302

        alice_page, bob_page = alice.get("/notes/"), bob.get("/notes/")
        assert (page_user(alice_page.text), page_user(bob_page.text)) == ("alice", "bob")
        alice_token = csrf_field(alice_page.text)

        saved = alice.post("/notes/", data={"text": "alice's private note", "csrfmiddlewaretoken": alice_token})
        assert saved.status_code == 302
        with_message = alice.get("/notes/").text
        assert "Note saved: alice&#x27;s private note" in with_message
        assert alice_token not in bob.get("/notes/").text
        for _ in range(2):
            bob_view = bob.get("/notes/").text
            assert page_user(bob_view) == "bob" and "alice" not in bob_view
            assert carol.get("/notes/").status_code == 302
        # The message was shown once, to alice; her notes stay hers.
        again = alice.get("/notes/").text
        assert "Note saved" not in again and "alice&#x27;s private note" in again

        # bob cannot post with alice's token (his CSRF cookie is his own).
        assert bob.post("/notes/", data={"text": "forged", "csrfmiddlewaretoken": alice_token}).status_code == 403
