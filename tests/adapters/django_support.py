"""Django in the test process: one configuration, four ways in, one small client interface.

Django's settings are process-wide and configured once; the adapter tests' project is used
when nothing else configured Django first, and laid over another configuration (the example
shop's, when its tests ran first) with ``override_settings`` otherwise. The database is then
whichever SQLite file Django already uses; the pool is pointed at the same file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import django
from django.conf import settings
from django.db import connections
from django.test.utils import override_settings

import scalekit

SETTINGS_MODULE = "tests.adapters.django_site.settings"
MODES = ["middleware-wsgi", "middleware-asgi", "middleware-asgi-sync", "wrap-wsgi", "wrap-asgi"]
# What `scalekit serve` makes of the middleware-only application, WSGI and ASGI.
SERVE_MODES = ["serve-wsgi", "serve-asgi"]
# Below scalekit's middleware, one that is sync only: Django then runs scalekit's in sync mode
# under ASGI (an ASGIRequest, no WSGI environ).
SYNC_ONLY_MIDDLEWARE = "tests.adapters.django_site.catalog.views.SyncOnlyMiddleware"


def configure_django(database_path: str) -> tuple[str, dict[str, Any]]:
    """Set Django up (once per process); return its SQLite path and the settings to overlay."""
    if not settings.configured:
        # Set for the import only: servers started later must not inherit either variable.
        os.environ["ADAPTER_TESTS_DJANGO_DB"] = database_path
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
        try:
            django.setup()
            settings.INSTALLED_APPS  # noqa: B018  (forces the settings module to load now)
        finally:
            del os.environ["ADAPTER_TESTS_DJANGO_DB"]
            del os.environ["DJANGO_SETTINGS_MODULE"]
    elif not django.apps.apps.ready:
        django.setup()
    overlay: dict[str, Any] = {}
    if getattr(settings, "SETTINGS_MODULE", None) != SETTINGS_MODULE:
        overlay = {"ROOT_URLCONF": "tests.adapters.django_site.urls",
                   "INSTALLED_APPS": ["tests.adapters.django_site.catalog"],
                   "MIDDLEWARE": ["scalekit_django.middleware.ScaleKitMiddleware"]}
    return str(connections["default"].settings_dict["NAME"]), overlay


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Site:
    """One way into the Django project, with the runtime its pipeline uses."""

    mode: str
    runtime_before: set[int] = field(default_factory=set)
    client: Any = None
    wrapped: Any = None
    runner: asyncio.Runner | None = None

    def start(self) -> None:
        self.runtime_before = {id(runtime) for runtime in scalekit.live_runtimes()}
        if self.mode == "middleware-wsgi":
            from django.test import Client
            self.client = Client(raise_request_exception=False)
        elif self.mode in ("middleware-asgi", "middleware-asgi-sync"):
            from django.test import AsyncClient
            self.client = AsyncClient(raise_request_exception=False)
            self.runner = asyncio.Runner()
        elif self.mode in ("wrap-wsgi", "serve-wsgi"):
            from werkzeug.test import Client as WerkzeugClient
            self.wrapped = self._wrapped("wsgi")
            self.client = WerkzeugClient(self.wrapped)
        else:
            from starlette.testclient import TestClient
            self.wrapped = self._wrapped("asgi")
            self.client = TestClient(self.wrapped, raise_server_exceptions=False)

    def _wrapped(self, kind: str) -> Any:
        """``scalekit_django.wrap(application)``, or what ``scalekit serve`` makes of the
        middleware-only application in each of its server processes."""
        from django.core.asgi import get_asgi_application
        from django.core.wsgi import get_wsgi_application

        application = get_wsgi_application() if kind == "wsgi" else get_asgi_application()
        if self.mode.startswith("serve"):
            from scalekit import cli
            return cli.wrap_served_app(application, kind=kind)
        import scalekit_django
        return scalekit_django.wrap(application)

    @property
    def runtime(self) -> scalekit.Runtime:
        if self.wrapped is not None:
            return self.wrapped.runtime
        new = [r for r in scalekit.live_runtimes() if id(r) not in self.runtime_before]
        assert len(new) == 1, f"expected the middleware to build one pipeline, found {len(new)}"
        return new[0]

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Result:
        headers = headers or {}
        if self.mode.startswith("middleware"):
            return self._django_request(method, path, headers)
        if self.mode in ("wrap-wsgi", "serve-wsgi"):
            response = self.client.open(path, method=method, headers=headers)
            try:
                cookies = SimpleCookie()
                for value in response.headers.getlist("Set-Cookie"):
                    cookies.load(value)
                return Result(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                              response.get_data(), {name: morsel.value for name, morsel in cookies.items()})
            finally:
                response.close()
        response = self.client.request(method, path, headers=headers)
        return Result(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                      response.content, dict(response.cookies))

    def _django_request(self, method: str, path: str, headers: dict[str, str]) -> Result:
        call = functools.partial(getattr(self.client, method.lower()), headers=headers)
        if self.runner is None:
            response = call(path)
            body = b"".join(response.streaming_content) if response.streaming else response.content
        else:
            async def fetch() -> tuple[Any, bytes]:
                response = await call(path)
                if not response.streaming:
                    return response, response.content
                if response.is_async:
                    return response, b"".join([chunk async for chunk in response.streaming_content])
                return response, b"".join(response.streaming_content)
            response, body = self.runner.run(fetch())
        return Result(response.status_code, {k.lower(): v for k, v in response.items()}, body,
                      {name: morsel.value for name, morsel in response.cookies.items()})

    def get(self, path: str, headers: dict[str, str] | None = None) -> Result:
        return self.request("GET", path, headers)

    def post(self, path: str, headers: dict[str, str] | None = None) -> Result:
        return self.request("POST", path, headers)

    def close(self) -> None:
        runtimes = [r for r in scalekit.live_runtimes() if id(r) not in self.runtime_before]
        for runtime in runtimes:
            runtime.close()
        if self.runner is not None:
            self.runner.close()


def open_site(mode: str, overlay: dict[str, Any]) -> Iterator[Site]:
    """Enter ``override_settings(**overlay)`` and yield a started :class:`Site`."""
    if mode == "middleware-asgi-sync":
        overlay = {**overlay, "MIDDLEWARE": [*settings.MIDDLEWARE, SYNC_ONLY_MIDDLEWARE]}
    with override_settings(**overlay):
        site = Site(mode)
        site.start()
        try:
            yield site
        finally:
            site.close()
