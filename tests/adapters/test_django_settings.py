"""``settings.SCALEKIT`` is the configuration in every way Django is installed and served:
middleware only, ``scalekit_django.wrap`` with the middleware (both), and what ``scalekit serve``
makes of the middleware-only application, under WSGI and ASGI. Each setting is observed by
its effect: the Cache-Status name, the purge endpoint's token, the allowed hosts, the cache
switched off. A key that two sources set differently is logged at start-up, naming the one used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scalekit
from scalekit import pipeline

from .django_support import MODES, SERVE_MODES, Site, configure_django, open_site
from .support import assert_hit, assert_not_hit, seed_items

FORMS = [mode for mode in MODES if mode != "middleware-asgi-sync"] + SERVE_MODES
PURGE_TOKEN = "settings-scalekit-purge-token"
OTHER_HOST = {"host": "elsewhere.example"}


@pytest.fixture(scope="module")
def django_database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    return configure_django(str(tmp_path_factory.mktemp("django-settings") / "items.sqlite3"))


def open_form(form: str, tmp_path: Path, django_database: tuple[str, dict[str, object]],
              scalekit: dict[str, Any]) -> Iterator[Site]:
    database_path, overlay = django_database
    url = f"sqlite:///{database_path}"
    seed_items(url)
    settings = {**overlay, "SCALEKIT": {"state_dir": str(tmp_path / "state"),
                                        "pool": {"databases": {"default": {"url": url}}}, **scalekit}}
    yield from open_site(form, settings)


@pytest.fixture(params=FORMS)
def configured(request: pytest.FixtureRequest, tmp_path: Path,
               django_database: tuple[str, dict[str, object]]) -> Iterator[Site]:
    yield from open_form(request.param, tmp_path, django_database, {
        "allowed_hosts": ["testserver", "localhost"],
        "cache": {"status_name": "from-settings", "invalidation": {"purge_token": PURGE_TOKEN}},
    })


@pytest.fixture(params=FORMS)
def cache_off(request: pytest.FixtureRequest, tmp_path: Path,
              django_database: tuple[str, dict[str, object]]) -> Iterator[Site]:
    yield from open_form(request.param, tmp_path, django_database, {"cache": {"enabled": False}})


def test_the_cache_status_name_is_the_settings_one(configured: Site) -> None:
    configured.get("/items/1/")
    second = configured.get("/items/1/")
    assert_hit(second.headers)
    assert second.headers["cache-status"].startswith("from-settings;")


def test_the_purge_endpoint_takes_the_settings_token(configured: Site) -> None:
    configured.get("/items/2/")
    assert configured.post("/_scalekit/purge?tag=item:2",
                           {"authorization": "Bearer not-the-token-at-all"}).status == 401
    assert configured.post("/_scalekit/purge?tag=item:2",
                           {"authorization": f"Bearer {PURGE_TOKEN}"}).status in (200, 202, 204)
    assert_not_hit(configured.get("/items/2/").headers)


def test_a_host_outside_the_settings_allowed_hosts_is_never_cached(configured: Site) -> None:
    configured.get("/items/3/", OTHER_HOST)
    assert "hit" not in configured.get("/items/3/", OTHER_HOST).headers.get("cache-status", "")


def test_the_cache_switched_off_in_settings_is_off(cache_off: Site) -> None:
    first, second = cache_off.get("/items/1/"), cache_off.get("/items/1/")
    assert first.status == second.status == 200
    assert "cache-status" not in second.headers


@pytest.mark.parametrize("form", ["middleware-wsgi", "serve-asgi"])
def test_settings_that_disagree_with_the_environment_are_logged_once(
        form: str, tmp_path: Path, django_database: tuple[str, dict[str, object]],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pipeline, "_warned", set())
    monkeypatch.setenv("SCALEKIT_CACHE_STATUS_NAME", "from-env")
    with caplog.at_level(logging.WARNING, logger="scalekit"):
        for site in open_form(form, tmp_path, django_database, {"cache": {"status_name": "from-settings"}}):
            site.get("/items/1/")
            assert site.get("/items/1/").headers["cache-status"].startswith("from-settings;")
    lines = [record.getMessage() for record in caplog.records if "cache.status_name" in record.getMessage()]
    assert len(lines) == 1, lines
    assert "using settings.SCALEKIT = 'from-settings'" in lines[0]
    assert "environment variable SCALEKIT_CACHE_STATUS_NAME = 'from-env'" in lines[0]


# --------------------------------------------------------------------------- start-up checks

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
DUMMY = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
PAGE_CACHE_URLS = "tests.adapters.django_site.page_cache_urls"


@pytest.mark.parametrize(("overrides", "fragment"), [
    pytest.param({"MIDDLEWARE": ["django.middleware.cache.UpdateCacheMiddleware",
                                 "scalekit_django.middleware.ScaleKitMiddleware",
                                 "django.middleware.cache.FetchFromCacheMiddleware"], "CACHES": LOCMEM},
                 "django.middleware.cache.UpdateCacheMiddleware in MIDDLEWARE", id="cache middleware"),
    pytest.param({"ROOT_URLCONF": PAGE_CACHE_URLS, "CACHES": LOCMEM},
        "cache_page on item (/cached/items/<int:item_id>/)",
                 id="cache_page under other decorators, in an include"),
    pytest.param({"ROOT_URLCONF": PAGE_CACHE_URLS, "CACHES": DUMMY}, None, id="DummyCache stores nothing"),
    pytest.param({"CACHES": LOCMEM}, None, id="neither"),
])
def test_django_s_page_cache_with_a_storing_backend_is_warned_about(
        overrides: dict[str, Any], fragment: str | None,
        django_database: tuple[str, dict[str, object]]) -> None:
    from django.test.utils import override_settings
    from django.urls import clear_url_caches
    from scalekit_django import checks

    _, overlay = django_database
    with override_settings(**{**overlay, **overrides}):
        clear_url_caches()
        try:
            message = checks.django_page_cache_warning()
        finally:
            clear_url_caches()
    if fragment is None:
        assert message is None
    else:
        assert message is not None and fragment in message, message
        assert "scalekit_django.cached" in message and "DummyCache" in message


def test_settings_scalekit_ignored_by_an_outside_pipeline_is_said(
        tmp_path: Path, django_database: tuple[str, dict[str, object]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from django.core.wsgi import get_wsgi_application
    from django.test.utils import override_settings
    from scalekit_django import checks
    from werkzeug.test import Client

    import scalekit

    monkeypatch.setattr(checks, "WRAPPED_WITH_SETTINGS", type(checks.WRAPPED_WITH_SETTINGS)())
    monkeypatch.setattr(checks, "_said", set())
    _, overlay = django_database
    settings = {**overlay, "SCALEKIT": {"state_dir": str(tmp_path), "cache": {"status_name": "unused"}}}
    with override_settings(**settings), caplog.at_level(logging.WARNING, logger="scalekit"):
        app = scalekit.wrap(get_wsgi_application(), state_dir=str(tmp_path))
        try:
            response = Client(app).get("/labels/1/")
            assert "unused" not in response.headers["cache-status"]
        finally:
            app.runtime.close()
    assert "settings.SCALEKIT is not used" in caplog.text
    assert "scalekit_django.wrap(application)" in caplog.text


def test_the_page_cache_warning_comes_with_the_first_request_not_the_import(
        tmp_path: Path, django_database: tuple[str, dict[str, object]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from django.core.wsgi import get_wsgi_application
    from django.test.utils import override_settings
    from scalekit_django import checks
    from werkzeug.test import Client

    monkeypatch.setattr(checks, "_said", set())
    _, overlay = django_database
    middleware = ["django.middleware.cache.UpdateCacheMiddleware",
                  "scalekit_django.middleware.ScaleKitMiddleware"]
    settings = {**overlay, "MIDDLEWARE": middleware, "CACHES": LOCMEM,
                "SCALEKIT": {"state_dir": str(tmp_path)}}
    with override_settings(**settings), caplog.at_level(logging.WARNING, logger="scalekit"):
        application = get_wsgi_application()  # what a process that only loads the app does
        assert "page cache" not in caplog.text
        client = Client(application)
        for _ in range(2):
            client.get("/labels/1/").close()
        for runtime in scalekit.live_runtimes():
            if runtime.config.state_dir == str(tmp_path):
                runtime.close()
    assert caplog.text.count("Django's page cache is active") == 1


def test_a_wrap_without_the_middleware_says_so_when_it_starts_serving(
        tmp_path: Path, django_database: tuple[str, dict[str, object]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import scalekit_django
    from django.core.wsgi import get_wsgi_application
    from django.test.utils import override_settings
    from scalekit_django import checks
    from werkzeug.test import Client

    monkeypatch.setattr(checks, "_said", set())
    _, overlay = django_database
    with override_settings(**{**overlay, "MIDDLEWARE": [], "SCALEKIT": {"state_dir": str(tmp_path)}}), \
            caplog.at_level(logging.WARNING, logger="scalekit"):
        app = scalekit_django.wrap(get_wsgi_application())
        try:
            assert "MIDDLEWARE" not in caplog.text
            for _ in range(2):
                Client(app).get("/labels/1/").close()
        finally:
            app.runtime.close()
    assert caplog.text.count("add 'scalekit_django.middleware.ScaleKitMiddleware' to MIDDLEWARE") == 1
