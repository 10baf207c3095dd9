"""The Django adapter, in the test process, four ways in: the middleware under Django's WSGI
and ASGI test clients, and ``scalekit_django.wrap`` around the WSGI and ASGI applications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .django_support import MODES, Site, configure_django, open_site
from .support import (
    ITEMS,
    assert_hit,
    assert_not_hit,
    checked_out,
    exposition_text,
    request_count,
    route_labels,
    seed_items,
)


@pytest.fixture(scope="module")
def django_database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    return configure_django(str(tmp_path_factory.mktemp("django") / "items.sqlite3"))


@pytest.fixture(params=MODES)
def site(request: pytest.FixtureRequest, tmp_path: Path,
         django_database: tuple[str, dict[str, object]]) -> Iterator[Site]:
    from .django_site.catalog.views import CALLS

    database_path, overlay = django_database
    url = f"sqlite:///{database_path}"
    seed_items(url)
    CALLS.clear()
    settings = {**overlay, "SCALEKIT": {"state_dir": str(tmp_path / "state"),
                                        "pool": {"databases": {"default": {"url": url}}}}}
    yield from open_site(request.param, settings)


def calls() -> dict[str, int]:
    from .django_site.catalog.views import CALLS
    return dict(CALLS)


def test_route_labels_are_full_resolver_patterns(site: Site) -> None:
    assert site.get("/calls/").status == 200
    assert site.get("/shop/things/spoon/").status == 200
    assert site.get("/no/such/page/").status == 404
    exposition = exposition_text()
    labels = route_labels(exposition)
    assert {"/calls/", "/shop/things/<str:name>/", "unmatched"} <= labels
    assert not {"/shop/things/spoon/", "/no/such/page/"} & labels
    assert request_count(exposition, "unmatched", "4xx") >= 1


@pytest.mark.parametrize("path", ["/items/1/", "/orm/items/1/", "/async/items/1/", "/async/pool/items/1/"],
                         ids=["pool read", "ORM read", "async view, ORM", "async view, pool"])
def test_cached_view_runs_once_then_hits(site: Site, path: str) -> None:
    first = site.get(path)
    second = site.get(path)
    assert first.json() == second.json() == {"id": 1, "name": ITEMS[1]}
    assert_not_hit(first.headers)
    assert_hit(second.headers)
    assert sum(calls().values()) == 1


def test_an_orm_save_invalidates_pool_reads_through_table_tracking(site: Site) -> None:
    site.get("/items/2/")
    assert_hit(site.get("/items/2/").headers)
    assert site.post("/admin/items/2/save/samovar/").status == 200
    after = site.get("/items/2/")
    assert_not_hit(after.headers)
    assert after.json()["name"] == "samovar"


def test_a_pool_write_invalidates_orm_reads_tagged_by_their_queries(site: Site) -> None:
    site.get("/orm/items/3/")
    assert_hit(site.get("/orm/items/3/").headers)
    assert site.post("/admin/items/3/rename/urn/").status == 200
    after = site.get("/orm/items/3/")
    assert_not_hit(after.headers)
    assert after.json()["name"] == "urn"


def test_a_save_invalidates_its_instance_tag_and_no_other(site: Site) -> None:
    site.get("/labels/1/")
    site.get("/labels/2/")
    assert site.post("/admin/items/1/save/cauldron/").status == 200
    assert_not_hit(site.get("/labels/1/").headers)
    assert_hit(site.get("/labels/2/").headers)


def test_invalidate_by_tag_reaches_the_next_request(site: Site) -> None:
    site.get("/items/3/")
    assert_hit(site.get("/items/3/").headers)
    site.post("/admin/items/3/touch/")
    assert_not_hit(site.get("/items/3/").headers)
    assert calls()["item"] == 2


@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/items/1/", 200, id="ok"),
    pytest.param("/items/99/", 404, id="Http404 after a query"),
    pytest.param("/boom/", 500, id="unhandled exception"),
    pytest.param("/stream/", 200, id="StreamingHttpResponse"),
])
def test_the_connection_is_back_in_the_pool_whatever_happened(site: Site, path: str, status: int) -> None:
    assert site.get(path).status == status
    assert checked_out(site.runtime) == 0


def test_streamed_rows_arrive_complete(site: Site) -> None:
    assert site.get("/stream/").text.splitlines() == [f"{i},{name}" for i, name in ITEMS.items()]


def test_cache_hits_are_counted_under_the_route_template(site: Site) -> None:
    before = request_count(exposition_text(), "/items/<int:item_id>/")
    site.get("/items/1/")
    assert_hit(site.get("/items/1/").headers)
    assert request_count(exposition_text(), "/items/<int:item_id>/") == before + 2


def test_cookies_set_by_a_view_reach_the_client(site: Site) -> None:
    response = site.get("/cookie/")
    assert response.text == "a cookie for you"
    assert response.cookies == {"flavour": "ginger"}


@pytest.mark.parametrize("mode", ["wrap-wsgi", "wrap-asgi"])
def test_route_labels_under_wrap_without_the_middleware(mode: str, tmp_path: Path,
                                                        django_database: tuple[str, dict[str, object]]) -> None:
    """``scalekit_django.wrap`` alone (no ScaleKitMiddleware in MIDDLEWARE) names routes too,
    by resolving the path against ROOT_URLCONF; a 404 stays ``unmatched``."""
    database_path, overlay = django_database
    url = f"sqlite:///{database_path}"
    seed_items(url)
    settings = {**overlay, "MIDDLEWARE": [],
                "SCALEKIT": {"state_dir": str(tmp_path / "state"),
                             "pool": {"databases": {"default": {"url": url}}}}}
    before = exposition_text()
    for site in open_site(mode, settings):
        assert site.get("/calls/").status == 200
        assert site.get("/shop/things/fork/").status == 200
        assert site.get("/no/such/place/").status == 404
    after = exposition_text()
    for route, status in (("/calls/", "2xx"), ("/shop/things/<str:name>/", "2xx"), ("unmatched", "4xx")):
        assert request_count(after, route, status) == request_count(before, route, status) + 1, route
    assert not {"/shop/things/fork/", "/no/such/place/"} & route_labels(after)


def test_the_inner_responses_resources_are_closed_without_request_finished(
        django_database: tuple[str, dict[str, object]]) -> None:
    """The bridge closes the inner response's files through Django's ``_resource_closers``
    (its ``close()`` would send ``request_finished`` a second time): this fails on a Django
    release that renames it, instead of leaking the files."""
    from django.core.signals import request_finished
    from django.http import HttpResponse
    from scalekit_django.bridge import _close_resources

    closed: list[bool] = []
    finished: list[object] = []

    def on_finished(**kwargs: object) -> None:
        finished.append(kwargs)

    response = HttpResponse(b"x")
    response._resource_closers.append(lambda: closed.append(True))
    request_finished.connect(on_finished)
    try:
        _close_resources(response)
    finally:
        request_finished.disconnect(on_finished)
    assert closed == [True] and not finished
