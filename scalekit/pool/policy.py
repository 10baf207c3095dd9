"""Pure decisions of the pool layer: admission, shedding, resets, leaks, capacity.

No I/O and no clock reads here (``now`` is an argument), so each rule is tested directly.

>>> decide_admission(pending=3, max_waiting=3, may_wait=True)
<Admission.SHED_QUEUE_FULL: 'queue_full'>
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from ..messages import Response, simple_response
from .config import DatabaseConfig

__all__ = [
    "Admission",
    "CheckoutSite",
    "capacity_warning",
    "decide_admission",
    "default_sqlite_url",
    "is_leak",
    "reset_queries",
    "resolve_reset_statement",
    "shed_message",
    "shed_response",
    "should_replace_response",
    "timeout_message",
]


class Admission(enum.Enum):
    """What to do with a request that needs a connection now."""

    CHECKOUT = "checkout"  # queue for the next connection given back
    SHED_QUEUE_FULL = "queue_full"  # max_waiting requests already wait: 503 at once
    SHED_ON_EVENT_LOOP = "event_loop"  # waiting would block the event loop: 503 at once
    WAIT_FOR_RESET = "wait_for_reset"  # on the loop, but a connection given back is being reset


def decide_admission(*, pending: int, max_waiting: int | None, may_wait: bool,
                     resetting: int = 0) -> Admission:
    """Whether a request that found every connection in use may queue for one.

    ``pending`` requests already wait; ``resetting`` connections were given back and are being
    reset in the background. Called only when no connection slot was free, so the waiting rules
    are the whole decision. On an event loop (``may_wait`` False) a request may still wait for
    a reset in flight: the resetter frees that slot within a round trip or two without needing
    the loop, whereas the requests holding the other connections need the loop to give them
    back.
    """
    if not may_wait and resetting == 0:
        return Admission.SHED_ON_EVENT_LOOP
    if max_waiting is not None and pending >= max_waiting:
        return Admission.SHED_QUEUE_FULL
    return Admission.CHECKOUT if may_wait else Admission.WAIT_FOR_RESET


def timeout_message(database: str, config: DatabaseConfig) -> str:
    """What a request that waited pool_timeout_seconds in vain is told (and the log says)."""
    return (f"no connection to database {database!r} became free within "
            f"pool_timeout_seconds={config.pool_timeout_seconds} (all pool_size="
            f"{config.pool_size} + max_overflow={config.max_overflow} in use); raise "
            f"pool.databases.{database}.pool_size or max_overflow, or shorten how long "
            "requests hold connections.")


def shed_message(database: str, config: DatabaseConfig, admission: Admission) -> str:
    """Why a request was shed at once, and what to change."""
    if admission is Admission.SHED_ON_EVENT_LOOP:
        return (f"database {database!r}: every connection is in use and waiting would block "
                "the event loop; in async code use `await db().aconnection()`, which waits "
                "in a worker thread.")
    return (f"database {database!r}: every connection is in use and max_waiting="
            f"{config.max_waiting} requests already wait; shed at once. Raise "
            f"pool.databases.{database}.max_waiting or the pool size.")


def shed_response(retry_after_seconds: int) -> Response:
    """The short 503 a request gets when no connection is available (no internals in it)."""
    # RFC 9110 §15.6.4: "The server MAY send a Retry-After header field to suggest an
    # appropriate amount of time for the client to wait before retrying the request."
    return simple_response(503, "Service busy: no database connection is free. Retry shortly.\n",
                           retry_after_seconds=retry_after_seconds)


def should_replace_response(status: int, pool_failed: bool) -> bool:
    """True when the app answered a server error because it could not get a connection.

    Frameworks turn an exception into their own 500 page before the layer sees it; that page
    becomes the 503 + Retry-After the client should get. A non-5xx answer means the app
    handled the failure itself (a degraded page), which is kept.
    """
    return pool_failed and status >= 500


# psycopg2 interpolates parameters client-side and never creates server-side prepared
# statements, so DISCARD ALL (which also deallocates prepared statements) cannot pull one from
# under it. Drivers that cache server-side prepared statements (psycopg 3 with
# prepare_threshold, asyncpg, pg8000) would find theirs gone, so they get RESET ALL, which
# resets settings only.
_POSTGRES_RESETS = {"psycopg2": "DISCARD ALL"}
_POSTGRES_FALLBACK_RESET = "RESET ALL"

# What DISCARD ALL does, statement by statement (PostgreSQL docs, DISCARD: "DISCARD ALL" is
# equivalent to this sequence). DISCARD ALL refuses to run inside a transaction block, and a
# multi-statement query is one (an implicit one) after a ROLLBACK in it; each of these runs
# there (tests/pool/test_reset.py checks it), so "ROLLBACK; " + this is a whole reset in one
# round trip.
DISCARD_ALL_STATEMENTS = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; "
    "SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES; UNLISTEN *"
)


def reset_queries(statement: str | None, *, in_transaction: bool) -> tuple[str, ...]:
    """The queries that reset a session once the driver's own rollback() has run.

    ``in_transaction``: the server still reports a transaction (one begun by SQL text behind
    the driver's back, which the driver's rollback() does not know to end). Then a ROLLBACK
    goes first, in the same query for DISCARD ALL (as its parts) and separately for any other
    configured statement, which may refuse a transaction block as DISCARD ALL does.

    >>> reset_queries("DISCARD ALL", in_transaction=False)
    ('DISCARD ALL',)
    """
    if not in_transaction:
        return (statement,) if statement else ()
    if statement is not None and " ".join(statement.upper().split()).rstrip(";") == "DISCARD ALL":
        return ("ROLLBACK; " + DISCARD_ALL_STATEMENTS,)
    return ("ROLLBACK", statement) if statement else ("ROLLBACK",)


def resolve_reset_statement(configured: str, *, dialect: str, driver: str) -> str | None:
    """The statement run on each returned connection, or None for none (after the rollback)."""
    if configured != "auto":
        return configured.strip() or None
    if dialect == "postgresql":
        return _POSTGRES_RESETS.get(driver, _POSTGRES_FALLBACK_RESET)
    return None  # SQLite: the rollback is the whole session state worth resetting


def default_sqlite_url(state_dir: str) -> str:
    """The SQLite file used when a database has no URL: ``<state_dir>/scalekit.sqlite3``."""
    return f"sqlite:///{Path(state_dir).resolve() / 'scalekit.sqlite3'}"


@dataclass(frozen=True, slots=True)
class CheckoutSite:
    """Where app code first used the request's connection (for leak warnings)."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}()"


def is_leak(*, checked_out_at: float, now: float, threshold_seconds: float | None) -> bool:
    """True once a connection has been held longer than the leak warning threshold."""
    return threshold_seconds is not None and now - checked_out_at > threshold_seconds


def capacity_warning(
    *, database: str, workers: int, max_connections_per_process: int,
    server_max_connections: int, reserved_connections: int = 0,
) -> str | None:
    """A warning when the fleet's pools could open more connections than the server accepts."""
    available = server_max_connections - reserved_connections
    wanted = workers * max_connections_per_process
    if wanted <= available:
        return None
    return (f"database {database!r}: {workers} worker(s) x (pool_size + max_overflow = "
            f"{max_connections_per_process}) = {wanted} connections, more than the server's "
            f"max_connections {server_max_connections} minus {reserved_connections} reserved; "
            "lower pool_size/max_overflow, run fewer workers, put PgBouncer in front, or raise "
            "max_connections.")
