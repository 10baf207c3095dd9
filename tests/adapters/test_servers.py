"""Every adapter under a real server: gunicorn for WSGI (Flask, Django), uvicorn for ASGI
(FastAPI both ways, Django both ways), and granian for both kinds. One scenario per server, over HTTP:
route labels are templates, a cached endpoint hits (its view ran once), a committed update
invalidates the next request, failures and streams answer, and afterwards no pooled
connection is still checked out (the pool's own gauge, read from /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers import run_server

from .support import (
    ITEMS,
    assert_hit,
    assert_not_hit,
    metric_samples,
    request_count,
    route_labels,
    seed_items,
    wait_until,
)

pytestmark = pytest.mark.server


@dataclass(frozen=True)
class Case:
    server: str
    target: str
    item_route: str  # the template /items/1 must be counted under
    slash: str = ""  # Django's URLs end with a slash
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # the server's own options


DJANGO = {"DJANGO_SETTINGS_MODULE": "tests.adapters.django_site.settings"}
CASES = [
    pytest.param(Case("gunicorn", "tests.adapters.apps.flask_items:app", "/items/<int:item_id>"),
                 id="flask-gunicorn"),
    pytest.param(Case("uvicorn", "tests.adapters.apps.fastapi_items:app", "/items/{item_id}"),
                 id="fastapi-add_middleware-uvicorn"),
    pytest.param(Case("uvicorn", "tests.adapters.apps.fastapi_items:wrapped_app", "/items/{item_id}"),
                 id="fastapi-wrap-uvicorn"),
    pytest.param(Case("gunicorn", "tests.adapters.django_site.wsgi:application", "/items/<int:item_id>/",
                      "/", DJANGO), id="django-wsgi-middleware-gunicorn"),
    pytest.param(Case("gunicorn", "tests.adapters.django_site.wsgi:wrapped", "/items/<int:item_id>/",
                      "/", DJANGO), id="django-wsgi-wrap-gunicorn"),
    pytest.param(Case("uvicorn", "tests.adapters.django_site.asgi:application", "/items/<int:item_id>/",
                      "/", DJANGO), id="django-asgi-middleware-uvicorn"),
    pytest.param(Case("uvicorn", "tests.adapters.django_site.asgi:wrapped", "/items/<int:item_id>/",
                      "/", DJANGO), id="django-asgi-wrap-uvicorn"),
    # granian (scalekit serve --server granian): WSGI on its blocking threads, and ASGI.
    pytest.param(Case("granian", "tests.adapters.apps.flask_items:app", "/items/<int:item_id>",
                      args=("--interface", "wsgi", "--blocking-threads", "4")), id="flask-granian"),
    pytest.param(Case("granian", "tests.adapters.django_site.wsgi:application", "/items/<int:item_id>/",
                      "/", DJANGO, ("--interface", "wsgi", "--blocking-threads", "4")),
                 id="django-wsgi-middleware-granian"),
    pytest.param(Case("granian", "tests.adapters.apps.fastapi_items:wrapped_app", "/items/{item_id}",
                      args=("--interface", "asgi")), id="fastapi-wrap-granian"),
]


def used_connections(client: httpx.Client) -> float:
    samples = metric_samples(client.get("/metrics").text, "scalekit_pool_connections")
    return sum(value for labels, value in samples
               if labels.get("database") == "default" and labels.get("state") == "used")


@pytest.mark.parametrize("case", CASES)
def test_adapter_under_a_real_server(case: Case, tmp_path: Path) -> None:
    database = tmp_path / "items.sqlite3"
    url = f"sqlite:///{database}"
    seed_items(url)
    env = {"SCALEKIT_STATE_DIR": str(tmp_path / "state"), "SCALEKIT_POOL_DATABASES_DEFAULT_URL": url,
           "ADAPTER_TESTS_DJANGO_DB": str(database), **case.env}
    s = case.slash
    with run_server(case.server, case.target, env=env, extra_args=case.args) as base_url, \
            httpx.Client(base_url=base_url, timeout=20) as client:
        # A cached endpoint: the view runs once, the second answer is a hit.
        first, second = client.get(f"/items/1{s}"), client.get(f"/items/1{s}")
        assert first.json() == second.json() == {"id": 1, "name": ITEMS[1]}
        assert_not_hit(first.headers)
        assert_hit(second.headers)
        if "DJANGO_SETTINGS_MODULE" in case.env:  # settings.SCALEKIT is used in every form
            assert second.headers["cache-status"].startswith("django-site;")
        assert client.get(f"/calls{s}").json().get("item") == 1

        # A committed update through the pool invalidates (table tracking) the next request.
        client.get(f"/items/2{s}")
        assert_hit(client.get(f"/items/2{s}").headers)
        assert client.post(f"/admin/items/2/rename/samovar{s}").status_code == 200
        renamed = client.get(f"/items/2{s}")
        assert_not_hit(renamed.headers)
        assert renamed.json()["name"] == "samovar"

        # Failures and streams; then nothing is left checked out.
        # Its own connection: Starlette re-raises after sending the 500, and uvicorn then
        # closes the connection, which a keep-alive client would only notice on its next use.
        assert httpx.get(f"{base_url}/boom{s}", timeout=20).status_code == 500
        assert client.get(f"/items/99{s}").status_code == 404
        streamed = client.get(f"/stream{s}").text.splitlines()
        assert streamed == [f"{i},{name if i != 2 else 'samovar'}" for i, name in ITEMS.items()]
        wait_until(lambda: used_connections(client) == 0, what="every pooled connection back")

        # Route labels: templates, never raw paths; a 404 of no route is "unmatched".
        assert client.get(f"/no/such/page{s}").status_code == 404
        # Counted once the app has returned, which under ASGI may be just after the client
        # has the whole response (Django finishes the request in a thread).
        wait_until(lambda: "unmatched" in route_labels(client.get("/metrics").text),
                   what="the 404 to be counted")
        exposition = client.get("/metrics").text
        labels = route_labels(exposition)
        assert {case.item_route, "unmatched"} <= labels
        assert not {f"/items/1{s}", f"/items/2{s}", f"/no/such/page{s}"} & labels
        assert request_count(exposition, case.item_route, "2xx") >= 2
