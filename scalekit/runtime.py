"""The runtime of one wrapped app: its config, clock, and the services its layers started.

Layers register what they own here (the cache's stores and invalidator, the pool's engines) and
their start-up / shutdown hooks; :func:`scalekit.invalidate` reaches every live runtime of the
process, so app code can invalidate without holding a handle.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .cache.invalidation import InvalidationResult, combine
from .config import Config

__all__ = ["Runtime", "live_runtimes"]

Hook = Callable[[], Any]
Invalidator = Callable[[tuple[str, ...], str], Any]

_LIVE: weakref.WeakSet[Runtime] = weakref.WeakSet()
_CREATED = itertools.count()
log = logging.getLogger("scalekit")


def live_runtimes() -> list[Runtime]:
    """Every runtime of this process that has not been closed, oldest first."""
    return sorted((runtime for runtime in list(_LIVE) if not runtime.closed),
                  key=lambda runtime: runtime.created_order)


class Runtime:
    """What one ``wrap()`` built: config, clocks, layer services and lifecycle hooks."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.services: dict[str, Any] = {}
        # Where each setting some source set came from (scalekit.provenance.Origin by key).
        self.origins: dict[str, Any] = {}
        self.closed = False
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._invalidators: list[tuple[Invalidator, Callable[..., Awaitable[Any]] | None]] = []
        self._started = False
        self._startup_lock = threading.Lock()
        self._astartup_lock: asyncio.Lock | None = None
        self.created_order = next(_CREATED)
        _LIVE.add(self)

    # ----------------------------------------------------------------- lifecycle
    def on_startup(self, hook: Hook) -> None:
        """Run ``hook`` (sync or async) at ASGI lifespan start-up or the first :meth:`startup`."""
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        """Run ``hook`` (sync or async) at shutdown, in reverse order of registration."""
        self._shutdown.append(hook)

    @property
    def started(self) -> bool:
        """True once the start-up hooks have all run."""
        return self._started

    def startup(self) -> None:
        """Run the start-up hooks once (sync callers: the WSGI root's first request, the CLI).

        Safe under concurrent first requests: one thread runs the hooks, the others wait.
        """
        if self._started:
            return
        with self._startup_lock:
            if self._started:
                return
            for hook in self._startup:
                _run_sync(hook())
            self._started = True

    async def astartup(self) -> None:
        """Run the start-up hooks once, awaiting async ones (ASGI lifespan or first request)."""
        if self._started:
            return
        if self._astartup_lock is None:
            self._astartup_lock = asyncio.Lock()
        async with self._astartup_lock:
            if self._started:
                return
            for hook in self._startup:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            self._started = True

    def close(self) -> None:
        """Run the shutdown hooks (close pools, stop listeners); safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for hook in reversed(self._shutdown):
            _run_sync(hook())

    async def ashutdown(self) -> None:
        """Async counterpart of :meth:`close` for ASGI lifespan shutdown."""
        if self.closed:
            return
        self.closed = True
        for hook in reversed(self._shutdown):
            result = hook()
            if inspect.isawaitable(result):
                await result

    # ----------------------------------------------------------------- invalidation
    def add_invalidator(
        self, invalidate: Invalidator, ainvalidate: Callable[..., Awaitable[Any]] | None = None
    ) -> None:
        """Register a layer's ``invalidate(tags, source)`` (and its async twin, if it has one)."""
        self._invalidators.append((invalidate, ainvalidate))

    def invalidate(self, tags: Iterable[str], *, source: str = "api") -> InvalidationResult:
        """Invalidate ``tags`` in every layer of this runtime that holds tagged state; how far
        it reached (the narrowest of the layers' answers)."""
        tag_tuple = tuple(tags)
        results = [invalidate(tag_tuple, source) for invalidate, _ in self._invalidators]
        return combine(result for result in results if isinstance(result, InvalidationResult))

    async def ainvalidate(self, tags: Iterable[str], *, source: str = "api") -> InvalidationResult:
        """Async :meth:`invalidate`: network work runs without blocking the event loop."""
        tag_tuple = tuple(tags)
        results = []
        for invalidate, ainvalidate in self._invalidators:
            if ainvalidate is not None:
                results.append(await ainvalidate(tag_tuple, source))
            else:
                results.append(await asyncio.to_thread(invalidate, tag_tuple, source))
        return combine(result for result in results if isinstance(result, InvalidationResult))


def _run_sync(result: Any) -> None:
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


@atexit.register
def _close_live_runtimes() -> None:
    # WSGI has no lifespan: run the shutdown hooks (close pools, stop listeners) at exit.
    for runtime in live_runtimes():
        try:
            runtime.close()
        except Exception:
            log.exception("scalekit: a shutdown hook failed at exit")
