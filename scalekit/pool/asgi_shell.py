"""The pool layer's ASGI 3 shell.

The request's connections are given back as soon as the app sends its last body message
(``more_body`` false), before the server transfers it: the body is whole by then, and a slow
reader must not hold a connection while the server drains it (work after that, such as
Starlette's background tasks, opens its own). They are given back at the latest when the app
returns — normally, by raising, or by being cancelled (the server cancels the app task when
the client goes away, Starlette cancels a streaming response on ``http.disconnect``) — and as
soon as the app *receives* ``http.disconnect``, or sends ``http.response.start`` after
``release_at_response_start()``. Each early release waits while a statement is running on the
connection in another thread (it is then given back when the app returns, so one connection
never serves two requests).

The connection is sync SQLAlchemy: ``await db().aconnection()`` does a checkout that has to
wait for a busy pool in a worker thread, so the event loop keeps serving the requests that will
give connections back; statements then run on the calling thread, as with any sync driver.
Giving a connection back costs the loop no round trip: an untouched one goes straight back to
the pool, and one the request used is handed to the database's resetter thread, which rolls
it back and resets its session before the pool lends it again (``reset_in_background``).
"""

from __future__ import annotations

from collections.abc import Awaitable

from .. import asgi
from ..calls import direct
from ..messages import Response
from .handle import RequestDatabases
from .policy import shed_response, should_replace_response
from .service import PoolService
from .wsgi_shell import DATABASES_KEY, DB_KEY

__all__ = ["ASGIPool"]

# Messages that end a response body when their more_body is false (pathsend: a whole file).
_LAST_BODY_MESSAGES = frozenset({"http.response.body", "http.response.pathsend"})


class _Exchange:
    """Wraps ``send``: swaps a 5xx caused by the pool for the 503, releases at response start."""

    __slots__ = ("_body_sent", "_receive", "_send", "replacement", "requests", "retry_after_seconds", "started")

    def __init__(self, requests: RequestDatabases, receive: asgi.Receive, send: asgi.Send,
                 retry_after_seconds: int) -> None:
        self.requests = requests
        self._receive = receive
        self._send = send
        self.retry_after_seconds = retry_after_seconds
        self.started = False
        self.replacement: Response | None = None
        self._body_sent = False

    async def receive(self) -> asgi.Message:
        """The app's ``receive``: a disconnected client's connections go back at once."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.requests.release_all(only_if_idle=True)
        return message

    def send(self, message: asgi.Message) -> Awaitable[None]:
        """The app's ``send``: a plain function handing on the next ``send``'s awaitable."""
        kind = message["type"]
        if kind == "http.response.start":
            requests = self.requests
            if requests.touched:  # a request that never tried a database has nothing to check
                if should_replace_response(message["status"], requests.failure() is not None):
                    return self.answer_503()
                requests.confirm_commits()
            self.started = True
            if requests.release_at_start:
                requests.release_all(only_if_idle=True)
            return self._send(message)
        if self.replacement is not None:
            if kind == "http.response.body" and not self._body_sent:
                return self._send_503_body()
            return asgi.DONE  # the rest of the app's error page is dropped
        if kind in _LAST_BODY_MESSAGES and not message.get("more_body", False):
            self.requests.release_all(only_if_idle=True)  # the body is whole: no need to hold
        return self._send(message)

    async def answer_503(self) -> None:
        """Send the 503 + Retry-After (start, or just the body if the start already went)."""
        if self.replacement is None:
            failure = self.requests.failure()
            retry_after = getattr(failure, "retry_after_seconds", self.retry_after_seconds)
            self.replacement = response = shed_response(retry_after)
            self.started = True
            await self._send({
                "type": "http.response.start",
                "status": response.status,
                "headers": [(name.encode("latin-1"), value.encode("latin-1"))
                            for name, value in response.headers],
            })
        if not self._body_sent:
            await self._send_503_body()

    async def _send_503_body(self) -> None:
        self._body_sent = True
        assert self.replacement is not None  # set just before, by answer_503
        await self._send({"type": "http.response.body", "body": self.replacement.body})


class ASGIPool:
    """Lends the request lazy database handles and takes them back when the app is done."""

    def __init__(self, app: asgi.ASGIApp, service: PoolService) -> None:
        self.app = app
        self.call_app = direct(app)
        self.service = service
        self.retry_after_seconds = service.databases["default"].config.retry_after_seconds

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            await self.call_app(scope, receive, send)
            return
        requests = self.service.begin_request(asgi.context_of(scope))
        scope[DB_KEY] = requests.default
        scope[DATABASES_KEY] = requests
        exchange = _Exchange(requests, receive, send, self.retry_after_seconds)
        try:
            await self.call_app(scope, exchange.receive, exchange.send)
        except Exception:
            requests.finish()
            if exchange.replacement is None and (exchange.started or requests.failure() is None):
                raise
            # The pool could not lend a connection: the client gets the 503, not a traceback.
            await exchange.answer_503()
        finally:
            requests.finish()
