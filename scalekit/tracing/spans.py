"""Spans inside the request: cache lookups and stores, tag invalidations, pool checkouts.

Each is a wrapper built at start-up only when ``tracing.enabled`` (so with tracing off the
cache and the pool hold their own objects and pay nothing):

- :class:`TracedStore` around the cache's store: ``cache lookup`` (``scalekit.cache.tier``,
  ``scalekit.cache.outcome`` hit or miss) and ``cache store`` spans. The cache's hot path for
  plain memory hits reads the memory tier directly; it finds no memory tier behind this
  wrapper, so with tracing on every lookup goes through the store and gets its span.
- :class:`TracedGenerations` around the tag generations: ``cache invalidate`` spans
  (``scalekit.cache.tags``: how many), for ``scalekit.invalidate`` and table writes alike.
- :func:`traced_database_class`: the pool's database with a ``pool checkout`` span following
  the database client conventions (``db.system.name``, ``db.client.connection.pool.name``,
  ``db.namespace``, ``server.address``/``server.port``); a checkout that sheds or times out ends
  its span with ``error.type`` and an error status.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

try:
    from opentelemetry import trace
except ImportError as missing:  # imported only when tracing.enabled is true
    raise ConfigError(key="tracing.enabled", value=True,
                      expected="OpenTelemetry installed: pip install 'scalekit[otel]' (or "
                               "tracing.enabled = false)") from missing

if TYPE_CHECKING:
    from ..pool.database import Database

__all__ = ["TRACER_NAME", "TracedGenerations", "TracedStore", "traced_database_class"]

TRACER_NAME = "scalekit"
INTERNAL = trace.SpanKind.INTERNAL
# SQLAlchemy backend names whose OpenTelemetry db.system.name differs.
DB_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "mariadb": "mariadb",
              "mssql": "microsoft.sql_server", "oracle": "oracle.db"}


def _tracer() -> trace.Tracer:
    # Looked up per span, so a tracer provider set after wrap() (tests, late SDK set-up) is used.
    return trace.get_tracer(TRACER_NAME)


def _failed(span: trace.Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(trace.StatusCode.ERROR, str(error)[:200])


class TracedStore:
    """A cache store whose lookups and writes are spans: the Store protocol, and a tiered
    store's L1-alone lookups when it wraps one."""

    def __init__(self, store: Any) -> None:
        self.store = store
        # A tiered store's L1-alone lookups, which the cache uses for URLs marked hit-for-miss
        # (no Redis round trip, no disk lookup): traced the same, so tracing keeps them.
        self.has_tiers_past_memory: bool = getattr(store, "has_tiers_past_memory", False)

    def get(self, key: str) -> Any:
        return self._traced_lookup(self.store.get, key)

    async def aget(self, key: str) -> Any:
        return await self._atraced_lookup(self.store.aget, key)

    def get_memory(self, key: str) -> Any:
        return self._traced_lookup(self.store.get_memory, key)

    async def aget_memory(self, key: str) -> Any:
        return await self._atraced_lookup(self.store.aget_memory, key)

    def memory_missed(self, key: str) -> None:
        self.store.memory_missed(key)

    async def amemory_missed(self, key: str) -> None:
        await self.store.amemory_missed(key)

    @staticmethod
    def _traced_lookup(lookup: Callable[[str], Any], key: str) -> Any:
        with _tracer().start_as_current_span("cache lookup", kind=INTERNAL) as span:
            found = lookup(key)
            _lookup_attributes(span, found)
            return found

    @staticmethod
    async def _atraced_lookup(lookup: Callable[[str], Awaitable[Any]], key: str) -> Any:
        with _tracer().start_as_current_span("cache lookup", kind=INTERNAL) as span:
            found = await lookup(key)
            _lookup_attributes(span, found)
            return found

    def set(self, key: str, entry: Any) -> None:
        with _tracer().start_as_current_span("cache store", kind=INTERNAL,
                                             attributes=_entry_attributes(entry)):
            self.store.set(key, entry)

    async def aset(self, key: str, entry: Any) -> None:
        with _tracer().start_as_current_span("cache store", kind=INTERNAL,
                                             attributes=_entry_attributes(entry)):
            await self.store.aset(key, entry)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    async def adelete(self, key: str) -> None:
        await self.store.adelete(key)


def _lookup_attributes(span: trace.Span, found: Any) -> None:
    if found is None:
        span.set_attribute("scalekit.cache.outcome", "miss")
        return
    entry, tier = found
    span.set_attribute("scalekit.cache.outcome", "hit")
    span.set_attribute("scalekit.cache.tier", tier)
    status = getattr(entry, "status", None)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)


def _entry_attributes(entry: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    status = getattr(entry, "status", None)
    if isinstance(status, int):
        attributes["http.response.status_code"] = status
    body = getattr(entry, "body", None)
    if isinstance(body, bytes):
        attributes["http.response.body.size"] = len(body)
    return attributes


class TracedGenerations:
    """Tag generations whose invalidations are spans; everything else is the wrapped object's."""

    def __init__(self, generations: Any) -> None:
        self.generations = generations

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generations, name)

    def invalidate(self, tags: Iterable[str]) -> Any:
        tags = tuple(tags)
        with _tracer().start_as_current_span("cache invalidate", kind=INTERNAL,
                                             attributes={"scalekit.cache.tags": len(tags)}):
            return self.generations.invalidate(tags)

    async def ainvalidate(self, tags: Iterable[str]) -> Any:
        tags = tuple(tags)
        with _tracer().start_as_current_span("cache invalidate", kind=INTERNAL,
                                             attributes={"scalekit.cache.tags": len(tags)}):
            return await self.generations.ainvalidate(tags)


def database_attributes(name: str, url: Any) -> dict[str, Any]:
    """The database client convention's attributes of pool ``name`` at SQLAlchemy ``url``."""
    backend = url.get_backend_name()
    attributes: dict[str, Any] = {"db.system.name": DB_SYSTEMS.get(backend, backend),
                                  "db.client.connection.pool.name": name}
    if url.database and backend != "sqlite":
        attributes["db.namespace"] = url.database
    if url.host:
        attributes["server.address"] = url.host
    if url.port:
        attributes["server.port"] = url.port
    return attributes


@functools.cache
def traced_database_class() -> type[Database]:
    """The pool's Database, its checkouts spans (built once, importing the pool lazily)."""
    from ..pool.database import Database

    class TracedDatabase(Database):
        def checkout(self, *, may_wait: bool = True) -> Any:
            with _tracer().start_as_current_span("pool checkout", kind=INTERNAL,
                                                 attributes=self._span_attributes(),
                                                 set_status_on_exception=False) as span:
                try:
                    return super().checkout(may_wait=may_wait)
                except BaseException as error:
                    _failed(span, error)
                    raise

        def try_checkout(self) -> Any:
            with _tracer().start_as_current_span("pool checkout", kind=INTERNAL,
                                                 attributes=self._span_attributes()) as span:
                connection = super().try_checkout()
                if connection is None:
                    span.set_attribute("scalekit.pool.outcome", "busy")
                return connection

        def _span_attributes(self) -> dict[str, Any]:
            return database_attributes(self.name, self.url)

    return TracedDatabase
