"""Postgres change feed: writes made outside the app (psql, a migration, a cron job, another
service) invalidate ``table:NAME`` too.

``scalekit db install-change-feed --table products`` installs a statement-level trigger per
table that runs ``pg_notify(channel, TG_TABLE_NAME)``; Postgres delivers a NOTIFY only when the
writing transaction commits, so a rolled-back write never invalidates. Each instance LISTENs on a
dedicated connection (not from the request pool) in a daemon thread and calls the runtime's
invalidation with ``source="change_feed"``. After the connection breaks (database restart,
network cut) it reconnects with backoff and, since notifications sent meanwhile are lost,
invalidates every table that has the trigger.

Writes made through the app are invalidated by table tracking already; their NOTIFY arrives a
few milliseconds later and invalidates once more, which costs at most one extra miss.

>>> install_statements(["products", '"Orders"'], channel="scalekit_table_changes")[1]
'DROP TRIGGER IF EXISTS scalekit_change_feed ON "products"'
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool
from sqlglot import exp

from .config import ChangeFeedConfig

__all__ = [
    "FUNCTION_NAME",
    "TRIGGER_NAME",
    "ChangeFeedListener",
    "install_statements",
    "tracked_tables",
    "uninstall_statements",
]

log = logging.getLogger("scalekit.pool")

TRIGGER_NAME = "scalekit_change_feed"
FUNCTION_NAME = "scalekit_notify_table_change"
_MAX_BACKOFF_SECONDS = 30.0

_FUNCTION_SQL = f"""CREATE OR REPLACE FUNCTION {FUNCTION_NAME}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Delivered at COMMIT only; identical payloads of one transaction are folded into one.
  PERFORM pg_notify(TG_ARGV[0], TG_TABLE_NAME);
  RETURN NULL;
END
$$"""

_TRACKED_SQL = (
    "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
    f"WHERE t.tgname = '{TRIGGER_NAME}' ORDER BY 1"
)


def quote_table(name: str) -> str:
    """``schema.table`` as Postgres reads it: unquoted parts fold to lower case."""
    table = exp.to_table(name, dialect="postgres")
    parts = [part for part in (table.args.get("db"), table.this) if part is not None]
    quoted = []
    for part in parts:
        text = part.this if part.quoted else part.this.lower()
        quoted.append('"' + text.replace('"', '""') + '"')
    return ".".join(quoted)


def install_statements(tables: Iterable[str], *, channel: str) -> list[str]:
    """The SQL that installs the trigger function and one trigger per table (idempotent)."""
    statements = [_FUNCTION_SQL]
    for table in tables:
        target = quote_table(table)
        statements.append(f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {target}")
        statements.append(
            f"CREATE TRIGGER {TRIGGER_NAME} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {target} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION_NAME}('{channel}')")
    return statements


def uninstall_statements(tables: Iterable[str]) -> list[str]:
    """The SQL that removes the trigger from each table."""
    return [f"DROP TRIGGER IF EXISTS {TRIGGER_NAME} ON {quote_table(table)}" for table in tables]


def tracked_tables(connection: Connection) -> list[str]:
    """Tables that carry the change-feed trigger."""
    return [row[0] for row in connection.exec_driver_sql(_TRACKED_SQL)]


class ChangeFeedListener:
    """LISTENs for table changes on a dedicated connection and invalidates ``table:NAME``."""

    def __init__(self, url: URL, config: ChangeFeedConfig, *,
                 invalidate: Callable[[tuple[str, ...]], None]) -> None:
        self.config = config
        self.invalidate = invalidate
        # Its own engine without a pool: the listening connection never serves a request and
        # never counts against the request pool.
        self._engine = create_engine(url, poolclass=NullPool, connect_args={
            "application_name": "scalekit-change-feed", "connect_timeout": 5,
            # Notice a silently dead peer (cut network) within ~25 s even with no traffic.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
        })
        self.connected = threading.Event()
        self.connections = 0  # successful (re)connections, for status and tests
        self._stop = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scalekit-change-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close the connection (waits briefly for the thread)."""
        self._stop.set()
        try:
            os.write(self._wake_write, b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for fd in (self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._engine.dispose()

    def _run(self) -> None:
        backoff = self.config.reconnect_seconds
        while not self._stop.is_set():
            try:
                self._listen_once()
                backoff = self.config.reconnect_seconds
            except Exception as exc:  # noqa: BLE001  (any failure: reconnect, never die)
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("scalekit: change feed connection lost (%s); reconnecting in %.1f s",
                            exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    def _listen_once(self) -> None:
        raw = self._engine.raw_connection()
        try:
            dbapi: Any = raw.dbapi_connection  # psycopg2's connection (poll, notifies, fileno)
            dbapi.autocommit = True  # LISTEN takes effect at once, notifications arrive freely
            with dbapi.cursor() as cursor:
                cursor.execute(f'LISTEN "{self.config.channel}"')
                cursor.execute(_TRACKED_SQL)
                tables = [row[0] for row in cursor.fetchall()]
            self.connections += 1
            if self.connections > 1 and tables:
                # Notifications sent while we were away are lost: assume every table changed.
                log.warning("scalekit: change feed reconnected; invalidating tables %s", tables)
                self._invalidate(tables)
            self.connected.set()
            self._pump(dbapi)
        finally:
            self.connected.clear()
            try:
                raw.close()
            except Exception:  
                log.debug("scalekit: closing the change feed connection failed", exc_info=True)

    def _pump(self, dbapi: Any) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([dbapi, self._wake_read], [], [], 30.0)
            if self._stop.is_set():
                return
            if not readable:
                with dbapi.cursor() as cursor:  # idle for a while: prove the connection lives
                    cursor.execute("SELECT 1")
                continue
            dbapi.poll()  # raises OperationalError once the server or the network went away
            if dbapi.notifies:
                tables = {note.payload for note in dbapi.notifies if note.channel == self.config.channel}
                dbapi.notifies.clear()
                if tables:
                    self._invalidate(sorted(tables))

    def _invalidate(self, tables: Iterable[str]) -> None:
        try:
            self.invalidate(tuple(f"table:{name}" for name in tables))
        except Exception:  # the cache degrades; listening must go on
            log.exception("scalekit: invalidating tables %s from the change feed failed", tables)
