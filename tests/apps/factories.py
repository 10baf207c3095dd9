"""App factories, as gunicorn's ``module:create_app()`` and ``uvicorn --factory`` serve them."""

from __future__ import annotations

from typing import Any

from tests.apps.plain import asgi_app, wsgi_app

CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = []


def create_app(greeting: str = "hello", *, debug: bool = False) -> Any:
    """A WSGI app answering ``GREETING <path>``; records how it was called."""
    CALLS.append(((greeting,), {"debug": debug}))

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = f"{greeting} {environ.get('PATH_INFO', '')}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def create_asgi_app() -> Any:
    return asgi_app


def returns_none() -> None:
    return None


def broken_factory() -> Any:
    raise LookupError("the factory's own bug")


class Factories:
    """A factory reached through an attribute: ``module:Factories.make()``."""

    @staticmethod
    def make() -> Any:
        return wsgi_app


def create_flask_app() -> Any:
    """Flask's tutorial shape: the factory installs scalekit on the app it builds."""
    from flask import Flask
    from scalekit_flask import ScaleKit

    app = Flask(__name__)

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    ScaleKit(app)
    return app
