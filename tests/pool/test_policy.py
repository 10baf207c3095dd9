"""The pool's pure decisions, called directly."""

from __future__ import annotations

import pytest

from scalekit.pool.policy import (
    DISCARD_ALL_STATEMENTS,
    Admission,
    CheckoutSite,
    capacity_warning,
    decide_admission,
    default_sqlite_url,
    is_leak,
    reset_queries,
    resolve_reset_statement,
    shed_response,
    should_replace_response,
)


@pytest.mark.parametrize(("pending", "max_waiting", "may_wait", "expected"), [
    pytest.param(0, None, True, Admission.CHECKOUT, id="no cap: wait"),
    pytest.param(2, 3, True, Admission.CHECKOUT, id="queue below cap: wait"),
    pytest.param(3, 3, True, Admission.SHED_QUEUE_FULL, id="queue at cap: shed"),
    pytest.param(0, 0, True, Admission.SHED_QUEUE_FULL, id="max_waiting 0: never queue"),
    pytest.param(0, None, False, Admission.SHED_ON_EVENT_LOOP, id="on the loop: never wait"),
])
def test_admission_when_every_connection_is_in_use(pending: int, max_waiting: int | None,
                                                   may_wait: bool, expected: Admission) -> None:
    assert decide_admission(pending=pending, max_waiting=max_waiting, may_wait=may_wait) is expected


def test_shed_response_is_short_uncacheable_503_with_retry_after() -> None:
    response = shed_response(3)
    headers = dict(response.headers)
    assert response.status == 503
    assert headers["retry-after"] == "3"
    assert headers["cache-control"] == "no-store"
    assert int(headers["content-length"]) == len(response.body) < 200
    assert b"Traceback" not in response.body


@pytest.mark.parametrize(("status", "failed", "replace"), [
    pytest.param(500, True, True, id="framework 500 page after a pool timeout"),
    pytest.param(502, True, True, id="any 5xx after a pool timeout"),
    pytest.param(200, True, False, id="the app served a degraded page itself"),
    pytest.param(500, False, False, id="an app error unrelated to the pool"),
])
def test_should_replace_response(status: int, failed: bool, replace: bool) -> None:
    assert should_replace_response(status, failed) is replace


@pytest.mark.parametrize(("configured", "dialect", "driver", "expected"), [
    pytest.param("auto", "postgresql", "psycopg2", "DISCARD ALL", id="psycopg2 has no server-side prepared statements"),
    pytest.param("auto", "postgresql", "psycopg", "RESET ALL", id="psycopg 3 may prepare: keep them"),
    pytest.param("auto", "postgresql", "asyncpg", "RESET ALL", id="asyncpg caches prepared statements"),
    pytest.param("auto", "sqlite", "pysqlite", None, id="sqlite: the rollback is enough"),
    pytest.param("", "postgresql", "psycopg2", None, id="empty: no reset statement"),
    pytest.param(" RESET ALL ", "postgresql", "psycopg2", "RESET ALL", id="explicit statement"),
])
def test_reset_statement(configured: str, dialect: str, driver: str, expected: str | None) -> None:
    assert resolve_reset_statement(configured, dialect=dialect, driver=driver) == expected


def test_leak_threshold() -> None:
    assert not is_leak(checked_out_at=100.0, now=130.0, threshold_seconds=30.0)
    assert is_leak(checked_out_at=100.0, now=130.5, threshold_seconds=30.0)
    assert not is_leak(checked_out_at=0.0, now=1e9, threshold_seconds=None)


def test_capacity_warning_names_the_numbers_and_the_fixes() -> None:
    assert capacity_warning(database="default", workers=4, max_connections_per_process=15,
                            server_max_connections=100, reserved_connections=3) is None
    text = capacity_warning(database="default", workers=8, max_connections_per_process=15,
                            server_max_connections=100, reserved_connections=3)
    assert text is not None
    assert "8 worker(s)" in text and "120" in text and "max_connections 100" in text
    assert "PgBouncer" in text


def test_default_sqlite_url_lives_under_state_dir(tmp_path: object) -> None:
    url = default_sqlite_url(str(tmp_path))
    assert url == f"sqlite:///{tmp_path}/scalekit.sqlite3"


def test_checkout_site_reads_like_a_traceback_line() -> None:
    assert str(CheckoutSite("app.py", 42, "report")) == "app.py:42 in report()"


def test_on_the_event_loop_a_reset_in_flight_is_worth_waiting_for() -> None:
    assert decide_admission(pending=0, max_waiting=None, may_wait=False,
                            resetting=1) is Admission.WAIT_FOR_RESET
    assert decide_admission(pending=0, max_waiting=None, may_wait=False,
                            resetting=0) is Admission.SHED_ON_EVENT_LOOP
    assert decide_admission(pending=2, max_waiting=2, may_wait=False,
                            resetting=1) is Admission.SHED_QUEUE_FULL


@pytest.mark.parametrize(("statement", "in_transaction", "expected"), [
    pytest.param("DISCARD ALL", False, ("DISCARD ALL",), id="idle: the statement alone"),
    pytest.param(None, False, (), id="no statement, idle: nothing"),
    pytest.param(" discard  all; ", True, ("ROLLBACK; " + DISCARD_ALL_STATEMENTS,),
                 id="DISCARD ALL after a rollback: its parts, one query"),
    pytest.param("RESET ALL", True, ("ROLLBACK", "RESET ALL"),
                 id="another statement after a rollback: as configured, on its own"),
    pytest.param(None, True, ("ROLLBACK",), id="no statement, in a transaction: the rollback"),
])
def test_reset_queries(statement: str | None, in_transaction: bool,
                       expected: tuple[str, ...]) -> None:
    assert reset_queries(statement, in_transaction=in_transaction) == expected
