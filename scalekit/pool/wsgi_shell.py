"""The pool layer's PEP 3333 shell.

A body that is plain data (a list, a tuple, the server's file wrapper) was fully produced when
the app returned: the request's connections are given back then, before the server sends a
byte of it, so a slow reader never holds one. Any other body may still run app code that uses
them, so they go back when the server calls its ``close()`` — after the last chunk, after the
client went away mid-stream, or after iteration raised (:class:`ReleasingBody`); a body the
server drops without ``close()`` gives them back when it is garbage collected. After
``release_at_response_start()`` they go back once the response has started and the app has
returned (code between ``start_response`` and the return, such as Flask's teardown, may still
use them; the body may not). An app that raises gives them back at once. A request that met a
pool timeout is answered 503 + Retry-After, also when the framework already turned the
exception into its own 500 page.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import wsgi
from ..calls import direct
from ..context import CONTEXT_KEY
from ..messages import Response, status_line
from .handle import RequestDatabases
from .policy import shed_response, should_replace_response
from .service import PoolService

__all__ = ["ReleasingBody", "WSGIPool"]

DB_KEY = "scalekit.db"
DATABASES_KEY = "scalekit.databases"


class _Exchange:
    """One request's response state: did it start, was it replaced by the 503."""

    __slots__ = (
        "replacement",
        "requests",
        "retry_after_seconds",
        "returned",
        "server_start_response",
        "started",
    )

    def __init__(self, requests: RequestDatabases, start_response: wsgi.StartResponse,
                 retry_after_seconds: int) -> None:
        self.requests = requests
        # Dropped once the response has started and the app has returned: servers' start_response
        # usually leads back to the object holding the body, and that cycle would keep a body
        # the server drops without close() (and its connection) alive until a full gc run.
        self.server_start_response: wsgi.StartResponse | None = start_response
        self.retry_after_seconds = retry_after_seconds
        self.started = False
        self.replacement: Response | None = None
        self.returned = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], object]:
        requests = self.requests
        if requests.touched:  # a request that never tried a database has nothing to check
            code = int(status[:3]) if status[:3].isdigit() else 500
            failure = requests.failure()
            if failure is not None and should_replace_response(code, True):
                return self.answer_503(exc_info)
            requests.confirm_commits()
        self.started = True
        server_start_response = self.server_start_response
        assert server_start_response is not None  # only dropped after the start
        if self.returned:  # a generator app starting from its body: no later use
            self.server_start_response = None
            if requests.release_at_start:
                requests.release_all(only_if_idle=True)
        if exc_info is not None:
            return server_start_response(status, headers, exc_info)
        return server_start_response(status, headers)

    def answer_503(self, exc_info: Any = None) -> Callable[[bytes], object]:
        server_start_response = self.server_start_response
        if server_start_response is None:  # the response already started: too late to replace
            raise RuntimeError("a pool failure after the response started cannot become a 503")
        failure = self.requests.failure()
        retry_after = getattr(failure, "retry_after_seconds", self.retry_after_seconds)
        self.replacement = response = shed_response(retry_after)
        self.started = True
        # exc_info lets a server accept a second start_response if the app had already called it.
        info = exc_info if exc_info is not None else _active_exception()
        if info is None:
            server_start_response(status_line(response.status), list(response.headers))
        else:
            server_start_response(status_line(response.status), list(response.headers), info)
        return _discard_write


def _active_exception() -> wsgi.ExcInfo | None:
    kind, value, traceback = sys.exc_info()
    return (kind, value, traceback) if kind is not None and value is not None else None


def _discard_write(data: bytes) -> None:
    """The app's error page is not sent once the 503 replaced it."""


class ReleasingBody:
    """The app's response iterable; gives the request's connections back on close()."""

    __slots__ = ("_closed", "_exchange", "_iterable", "_service")

    def __init__(self, iterable: Iterable[bytes], exchange: _Exchange, service: PoolService) -> None:
        self._iterable = iterable
        self._exchange = exchange
        self._service = service
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        if exchange.replacement is not None:
            yield exchange.replacement.body
            return
        try:
            for chunk in self._iterable:
                if exchange.replacement is not None:  # a generator app started its 500 lazily
                    yield exchange.replacement.body
                    return
                yield chunk
        except Exception:
            if exchange.started or exchange.requests.failure() is None:
                raise
            exchange.answer_503()  # a generator app raised the pool error before starting
            assert exchange.replacement is not None  # set by answer_503
            yield exchange.replacement.body

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            wsgi.close_body(self._iterable)
        finally:
            self._exchange.requests.finish()

    def __del__(self) -> None:
        # The server dropped the body without close() (a PEP 3333 violation, or an abandoned
        # iterator): give the connections back anyway, from the pool's worker thread.
        if not self._closed and self._exchange.requests.any_checked_out():
            self._service.release_later(self._exchange.requests)


class WSGIPool:
    """Lends the request lazy database handles and takes them back when the response ends."""

    def __init__(self, app: wsgi.WSGIApp, service: PoolService) -> None:
        self.app = app
        self.call_app = direct(app)
        self.service = service
        self.retry_after_seconds = service.databases["default"].config.retry_after_seconds

    def __call__(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        requests = self.service.begin_request(environ.get(CONTEXT_KEY) or wsgi.context_of(environ))
        environ[DB_KEY] = requests.default
        environ[DATABASES_KEY] = requests
        exchange = _Exchange(requests, start_response, self.retry_after_seconds)
        try:
            iterable = self.call_app(environ, exchange.start_response)
        except Exception:
            requests.finish()
            if exchange.replacement is None:
                if requests.failure() is None:
                    raise
                exchange.answer_503()
            assert exchange.replacement is not None  # set by answer_503
            return [exchange.replacement.body]
        except BaseException:
            requests.finish()
            raise
        if exchange.replacement is not None:
            wsgi.close_body(iterable)
            requests.finish()
            return [exchange.replacement.body]
        exchange.returned = True
        if exchange.started:
            exchange.server_start_response = None
            if requests.release_at_start:
                requests.release_all(only_if_idle=True)
        if _is_inert(iterable, environ):
            # A body that cannot run app code, and nothing left to give back: hand it over as
            # is (a list keeps its length, a file wrapper its sendfile path). A statement still
            # running in another thread of the request keeps its connection until close().
            if requests.finish_if_untouched():  # the usual request, that never tried a database
                return iterable
            if requests.release_all(only_if_idle=True):
                requests.finish()
                return iterable
        return ReleasingBody(iterable, exchange, self.service)


def _is_inert(iterable: Iterable[bytes], environ: wsgi.Environ) -> bool:
    """True for bodies that are plain data: a list, a tuple, the server's file wrapper."""
    if isinstance(iterable, (list, tuple)):
        return True
    file_wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(file_wrapper, type) and isinstance(iterable, file_wrapper)
