"""Configuration of the per-request database connection pool.

One :class:`DatabaseConfig` per named database (``default`` must exist: it is the handle put in
the WSGI environ / ASGI scope as ``scalekit.db``), plus table tracking and the Postgres change
feed. In scalekit.toml::

    [pool.databases.default]
    url = "postgresql+psycopg2://app@db:5432/shop"
    pool_size = 10

or ``SCALEKIT_POOL_DATABASES_DEFAULT_URL=postgresql://...``. With no URL the database is a
SQLite file under ``state_dir``, so a bare ``wrap(app)`` needs nothing installed.

>>> PoolConfig().databases["default"].pool_size
5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..secrets import check_password_source, password_of

__all__ = ["AUTO_RESET", "ChangeFeedConfig", "DatabaseConfig", "PoolConfig"]

# reset_statement value meaning "pick the safe statement for this driver" (see policy.py).
AUTO_RESET = "auto"


def require(condition: bool, key: str, value: Any, expected: str) -> None:
    """Like ``scalekit.config.require`` (which imports this module, hence the local copy)."""
    if not condition:
        raise ConfigError(key=key, value=value, expected=expected)


def _is_identifier(text: str) -> bool:
    return text.replace("_", "a").isalnum() and text.isascii() and not text[:1].isdigit()


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """One database: a SQLAlchemy URL and its QueuePool settings."""

    # SQLAlchemy URL (``postgresql://user@host/db`` uses psycopg2). None: a SQLite file
    # ``<state_dir>/scalekit.sqlite3``, created on first use.
    url: str | None = None
    # The password apart from the URL, passed to the driver as it is: a secret with '@', ':'
    # or '/' needs no percent-encoding. password_file reads it from a file (a Docker or
    # Kubernetes secret) at start-up. Set at most one, and then no password in url.
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    pool_size: int = 5
    max_overflow: int = 10
    # How long a request waits for a free connection before it is answered 503.
    pool_timeout_seconds: float = 5.0
    # A cheap round trip on checkout that replaces dead connections (after a database restart).
    pre_ping: bool = True
    # Connections older than this are replaced on checkout (0: never), so a proxy or firewall
    # that silently drops idle connections never hands a request a dead one.
    recycle_seconds: float = 1800.0
    # Run on every connection given back, after the rollback, so session state (SET, temp
    # tables, prepared statements) never leaks into the next request. "auto": DISCARD ALL for
    # Postgres via psycopg2, RESET ALL for other Postgres drivers, nothing for SQLite; "": none.
    reset_statement: str = AUTO_RESET
    # Roll back and reset a connection the request used on a background thread (one per
    # database and process) once the request gives it back, so the response never waits for
    # those round trips; the connection is lent again only once reset. False: reset inline,
    # before the request's return finishes. SQLite always resets inline (no round trip).
    reset_in_background: bool = True
    # Keep the SQLAlchemy Connections requests give back (once reset) and lend them to the next
    # requests as they are, instead of returning them to the engine's QueuePool and building new
    # ones: a checkout and return then cost no pool events. One is kept only when it is as a new
    # one would be (no execution options, listeners or driver settings of the app's). False:
    # every request's connection goes through QueuePool (its checkout/checkin events fire).
    reuse_connections: bool = True
    # Shed at once (503) when this many requests already wait for a connection (None: no cap).
    max_waiting: int | None = None
    # Warn (log + metric) when a request holds a connection longer than this (None: never).
    leak_warning_seconds: float | None = 30.0
    retry_after_seconds: int = 1
    connect_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.url is not None:
            require("://" in self.url or self.url.startswith("sqlite:"), "url", _hide_password(self.url),
                    "a SQLAlchemy URL such as 'postgresql://user@host:5432/db' or "
                    "'sqlite:///path/app.db', or unset for the default SQLite file")
        check_password_source(self.url, password=self.password, password_file=self.password_file)
        require(self.pool_size >= 1, "pool_size", self.pool_size, "a positive number of connections")
        require(self.max_overflow >= 0, "max_overflow", self.max_overflow, "zero or more connections")
        require(self.pool_timeout_seconds > 0, "pool_timeout_seconds", self.pool_timeout_seconds,
                "a positive number of seconds")
        require(self.recycle_seconds >= 0, "recycle_seconds", self.recycle_seconds,
                "zero (never) or more seconds")
        require(self.max_waiting is None or self.max_waiting >= 0, "max_waiting", self.max_waiting,
                "zero or more waiting requests, or unset for no cap")
        require(self.leak_warning_seconds is None or self.leak_warning_seconds > 0,
                "leak_warning_seconds", self.leak_warning_seconds, "a positive number of seconds or unset")
        require(self.retry_after_seconds >= 0, "retry_after_seconds", self.retry_after_seconds,
                "zero or more whole seconds")
        require(self.connect_timeout_seconds > 0, "connect_timeout_seconds",
                self.connect_timeout_seconds, "a positive number of seconds")

    def resolved_password(self) -> str | None:
        """``password``, else the content of ``password_file``, else None (the URL's)."""
        return password_of(password=self.password, password_file=self.password_file)

    @property
    def max_connections(self) -> int:
        """The most connections this pool opens per process: pool_size + max_overflow."""
        return self.pool_size + self.max_overflow


@dataclass(frozen=True, slots=True)
class ChangeFeedConfig:
    """Invalidate ``table:NAME`` when anything writes to a table, via Postgres LISTEN/NOTIFY.

    Install the triggers once with ``scalekit db install-change-feed --table products``.
    """

    enabled: bool = False
    database: str = "default"
    channel: str = "scalekit_table_changes"
    # First delay before reconnecting after the listening connection broke; doubles up to 30 s.
    reconnect_seconds: float = 0.5

    def __post_init__(self) -> None:
        require(_is_identifier(self.channel) and len(self.channel) <= 63, "channel", self.channel,
                "a Postgres identifier (letters, digits, underscores; at most 63 characters)")
        require(self.reconnect_seconds > 0, "reconnect_seconds", self.reconnect_seconds,
                "a positive number of seconds")


def _default_databases() -> dict[str, DatabaseConfig]:
    return {"default": DatabaseConfig()}


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Named databases, each a SQLAlchemy QueuePool lent lazily to each request."""

    enabled: bool = True
    databases: dict[str, DatabaseConfig] = field(default_factory=_default_databases)
    # Tag responses with the tables they read, invalidate the tables a committed transaction wrote.
    track_tables: bool = True
    # Distinct raw SQL texts whose parsed table lists are kept (parsing costs ~0.1-5 ms).
    parsed_statement_cache_size: int = 1024
    change_feed: ChangeFeedConfig = field(default_factory=ChangeFeedConfig)

    def __post_init__(self) -> None:
        require("default" in self.databases, "databases", sorted(self.databases),
                "a table of databases that includes 'default' ([pool.databases.default] url = ...)")
        for name in self.databases:
            require(_is_identifier(name), "databases", name,
                    "database names made of letters, digits and underscores")
        require(self.parsed_statement_cache_size >= 0, "parsed_statement_cache_size",
                self.parsed_statement_cache_size, "zero or more statements")
        feed = self.change_feed
        if feed.enabled:
            require(feed.database in self.databases, "change_feed.database", feed.database,
                    "one of the configured databases: " + ", ".join(sorted(self.databases)))


def _hide_password(url: str) -> str:
    """``url`` with whatever precedes the host (user, password) masked, for error messages."""
    if "@" not in url:
        return url
    scheme, sep, _ = url.partition(":")
    return f"{scheme}{sep}//***@{url.rpartition('@')[2]}" if sep else f"***@{url.rpartition('@')[2]}"
