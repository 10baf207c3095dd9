"""wrap(): kind detection, the layer chain and its order, the runtime, and WSGI/ASGI parity."""

from __future__ import annotations

import functools
import os
import types
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import scalekit
from scalekit import pipeline
from scalekit.asgi import ASGIRoot
from scalekit.errors import WrapError
from scalekit.wsgi import WSGIRoot
from tests.direct import asgi_scope, call_asgi, call_wsgi, comparable_headers


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"wsgi"]


async def asgi_function(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})


def wsgi_with_default(environ: Any, start_response: Any, extra: Any = None) -> list[bytes]:
    return wsgi_function(environ, start_response)


class WSGIClass:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return wsgi_function(environ, start_response)


class ASGIClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi_function(scope, receive, send)


class WSGIAppClass:
    """PEP 3333 allows a class as the app: calling it returns the response iterable."""

    def __init__(self, environ: Any, start_response: Any) -> None:
        start_response("200 OK", [])

    def __iter__(self) -> Any:
        return iter([b"class"])


class Handlers:
    def wsgi(self, environ: Any, start_response: Any) -> list[bytes]:
        return wsgi_function(environ, start_response)

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi_function(scope, receive, send)


def _django_wsgi() -> Any:
    # Django is configured once per process: with the adapter tests' project (its database in
    # the suite's state directory), so the Django tests that run later in this process work.
    from tests.adapters.django_support import configure_django
    configure_django(os.path.join(os.environ["SCALEKIT_STATE_DIR"], "django-items.sqlite3"))
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    return WSGIHandler, ASGIHandler


DETECTED = [
    pytest.param(lambda: wsgi_function, "wsgi", id="wsgi function"),
    pytest.param(lambda: asgi_function, "asgi", id="asgi function"),
    pytest.param(lambda: wsgi_with_default, "wsgi", id="wsgi function with an optional argument"),
    pytest.param(lambda: WSGIClass(), "wsgi", id="instance with __call__ (wsgi)"),
    pytest.param(lambda: ASGIClass(), "asgi", id="instance with async __call__ (asgi)"),
    pytest.param(lambda: WSGIAppClass, "wsgi", id="wsgi app class"),
    pytest.param(lambda: Handlers().wsgi, "wsgi", id="bound method (wsgi)"),
    pytest.param(lambda: Handlers().asgi, "asgi", id="bound method (asgi)"),
    pytest.param(lambda: functools.partial(wsgi_with_default, extra=1), "wsgi", id="partial (wsgi)"),
    pytest.param(lambda: functools.partial(asgi_function), "asgi", id="partial (asgi)"),
    pytest.param(lambda: __import__("flask").Flask("x"), "wsgi", id="flask app"),
    pytest.param(lambda: __import__("starlette.applications").applications.Starlette(), "asgi", id="starlette app"),
    pytest.param(lambda: __import__("fastapi").FastAPI(), "asgi", id="fastapi app"),
    pytest.param(lambda: _django_wsgi()[0](), "wsgi", id="django WSGIHandler"),
    pytest.param(lambda: _django_wsgi()[1](), "asgi", id="django ASGIHandler"),
]


@pytest.mark.parametrize(("make", "kind"), DETECTED)
def test_detect_kind(make: Any, kind: str) -> None:
    app = make()
    assert pipeline.detect_kind(app) == kind
    wrapped = scalekit.wrap(app, cdn=False, cache=False, pool=False)
    assert isinstance(wrapped, ASGIRoot if kind == "asgi" else WSGIRoot)
    assert wrapped.app is app


async def async_two(scope: Any, receive: Any) -> None: ...


REFUSED = [
    pytest.param(None, "which is not callable", id="None"),
    pytest.param("app", "which is not callable", id="a string"),
    pytest.param(types.ModuleType("module"), "which is not callable", id="a module"),
    pytest.param(lambda: None, "cannot be called with (environ, start_response)", id="no arguments"),
    pytest.param(lambda a, b, c: None, "cannot be called with (environ, start_response)", id="three arguments"),
    pytest.param(async_two, "ASGI 2 app", id="async with two arguments"),
    pytest.param(WSGIClass, "not an app; wrap an instance", id="class whose instances are apps"),
]


@pytest.mark.parametrize(("app", "fragment"), REFUSED)
def test_wrap_refuses_non_apps_with_a_clear_type_error(app: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match="scalekit.wrap") as caught:
        scalekit.wrap(app)
    assert isinstance(caught.value, WrapError)
    assert fragment in str(caught.value)


def test_kind_override() -> None:
    class HiddenASGI:  # a sync __call__ returning a coroutine: only kind= can tell
        def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
            return asgi_function(scope, receive, send)

    with pytest.raises(WrapError, match="kind='asgi'"):
        scalekit.wrap(HiddenASGI())
    wrapped = scalekit.wrap(HiddenASGI(), kind="asgi", cdn=False, cache=False, pool=False)
    assert call_asgi(wrapped).body == b"asgi"
    with pytest.raises(WrapError, match="kind must be 'wsgi' or 'asgi'"):
        scalekit.wrap(wsgi_function, kind="rsgi")  # type: ignore[arg-type]
    with pytest.raises(WrapError, match="not callable"):
        scalekit.wrap(None, kind="wsgi")


def test_wrapping_twice_is_refused() -> None:
    wrapped = scalekit.wrap(wsgi_function, cdn=False, cache=False, pool=False)
    with pytest.raises(WrapError, match="already wrapped"):
        scalekit.wrap(wrapped)


# --------------------------------------------------------------------------- the chain


@pytest.fixture
def recording_layers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace each layer module by one that records the order requests pass through it."""
    calls: list[str] = []
    modules = {}
    for name in pipeline.LAYER_ORDER:
        module = types.ModuleType(f"fake_{name}")

        def wrap_wsgi(app: Any, runtime: Any, name: str = name) -> Any:
            def layer(environ: Any, start_response: Any) -> Any:
                calls.append(name)
                return app(environ, start_response)
            return layer

        def wrap_asgi(app: Any, runtime: Any, name: str = name) -> Any:
            async def layer(scope: Any, receive: Any, send: Any) -> None:
                calls.append(name)
                await app(scope, receive, send)
            return layer

        module.wrap_wsgi, module.wrap_asgi = wrap_wsgi, wrap_asgi  # type: ignore[attr-defined]
        modules[name] = f"fake_{name}"
        monkeypatch.setitem(__import__("sys").modules, f"fake_{name}", module)
    monkeypatch.setattr(pipeline, "_LAYER_MODULES", modules)
    return calls


@pytest.mark.parametrize("off", [(), ("cdn",), ("metrics", "pool"), ("metrics", "cdn", "cache", "pool")])
def test_layers_run_outermost_first_and_disabled_ones_are_absent(recording_layers: list[str],
                                                                 off: tuple[str, ...]) -> None:
    settings = {name: False for name in off}
    expected = [name for name in ("metrics", "cdn", "cache", "pool") if name not in off]
    assert call_wsgi(scalekit.wrap(wsgi_function, **settings)).body == b"wsgi"
    assert recording_layers == expected
    recording_layers.clear()
    assert call_asgi(scalekit.wrap(asgi_function, **settings)).body == b"asgi"
    assert recording_layers == expected


def test_all_layers_off_is_the_app_behind_the_root() -> None:
    wrapped = scalekit.wrap(wsgi_function, metrics=False, cdn=False, cache=False, pool=False)
    assert wrapped.chain is wsgi_function


def test_invalidate_reaches_every_live_runtime() -> None:
    seen: list[tuple[tuple[str, ...], str]] = []
    wrapped = scalekit.wrap(wsgi_function, metrics=False, cdn=False, cache=False, pool=False)
    wrapped.runtime.add_invalidator(lambda tags, source: seen.append((tags, source)))
    scalekit.invalidate("product:1")
    scalekit.invalidate(["a", "b"], source="cli")
    assert seen == [(("product:1",), "api"), (("a", "b"), "cli")]

    async def async_invalidator(tags: tuple[str, ...], source: str) -> None:
        seen.append((tags, f"async {source}"))

    wrapped.runtime.add_invalidator(lambda tags, source: None, async_invalidator)
    import asyncio
    asyncio.run(scalekit.ainvalidate(["c"]))
    assert seen[-2:] == [(("c",), "api"), (("c",), "async api")]
    wrapped.runtime.close()
    assert wrapped.runtime not in scalekit.live_runtimes()


# --------------------------------------------------------------------------- WSGI/ASGI parity

header_names = st.sampled_from(["x-a", "x-b", "content-type", "set-cookie", "cache-control"])
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(str.strip)
responses = st.tuples(
    st.sampled_from([200, 201, 204, 301, 404, 418, 500, 503]),
    st.lists(st.tuples(header_names, header_values), max_size=5),
    st.lists(st.binary(max_size=30), max_size=4),
)


class Scripted:
    """One WSGI and one ASGI app answering whatever response the current example sets."""

    def __init__(self) -> None:
        self.status, self.headers, self.chunks = 200, [("cache-control", "no-store")], [b""]

    def wsgi(self, environ: Any, start_response: Any) -> list[bytes]:
        from scalekit.messages import status_line
        start_response(status_line(self.status), list(self.headers))
        return list(self.chunks)

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(n.encode(), v.encode()) for n, v in self.headers]})
        for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


SCRIPTED = Scripted()
PARITY_APPS: dict[str, tuple[Any, Any]] = {}


def parity_apps(variant: str) -> tuple[Any, Any]:
    # Wrapped once per variant (building the default layers opens stores), shared by examples.
    if variant not in PARITY_APPS:
        options = {"cdn": False, "cache": False, "pool": False} if variant == "metrics only" else {}
        PARITY_APPS[variant] = (scalekit.wrap(SCRIPTED.wsgi, **options), scalekit.wrap(SCRIPTED.asgi, **options))
    return PARITY_APPS[variant]


@settings(max_examples=40, deadline=None)
@given(response=responses, variant=st.sampled_from(["metrics only", "defaults"]))
# A quote left open once hid the no-store after it: WSGI hashed an ETag for the list, ASGI not.
@example(response=(200, [("set-cookie", ""), ("cache-control", '"')], []), variant="defaults")
def test_wsgi_and_asgi_drivers_give_identical_responses(response: Any, variant: str) -> None:
    status, headers, chunks = response
    SCRIPTED.status = status
    SCRIPTED.headers = [*headers, ("cache-control", "no-store")]  # layer-neutral under defaults
    SCRIPTED.chunks = [] if status == 204 else chunks
    wsgi_app, asgi_app = parity_apps(variant)
    via_wsgi = call_wsgi(wsgi_app, path="/parity")
    via_asgi = call_asgi(asgi_app, asgi_scope(path="/parity"))
    assert via_wsgi.status_code == via_asgi.status == status
    assert comparable_headers(via_wsgi.headers) == comparable_headers(via_asgi.headers)
    assert via_wsgi.body == via_asgi.body == b"".join(SCRIPTED.chunks)


def test_the_allowed_hosts_warning_comes_when_serving_starts_once_per_process(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_warned", set())
    with caplog.at_level("WARNING", logger="scalekit"):
        first = scalekit.wrap(wsgi_function, cache=False, cdn=False, pool=False)
        second = scalekit.wrap(wsgi_function, cache=False, cdn=False, pool=False)
        assert "allowed_hosts" not in caplog.text  # wrapping serves nothing yet
        call_wsgi(first, "GET", "/")
        call_wsgi(second, "GET", "/")
    assert caplog.text.count("allowed_hosts is '*'") == 1
    first.runtime.close(), second.runtime.close()
