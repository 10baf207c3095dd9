"""The request's database time: what its statements took on pooled connections, in its context
(the cache keeps it with a stored response and counts it as saved on every hit)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import sqlalchemy.exc

import scalekit
from scalekit.pool import db
from tests.direct import call_wsgi

SLEEP_MS = 30


def _with_sleep(seen: list[Any], statements: list[str]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(scalekit.current())
        db().dbapi_connection().create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000) or ms)
        for statement in statements:
            try:
                db().connection().exec_driver_sql(statement)
            except sqlalchemy.exc.OperationalError:
                pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return scalekit.wrap(app, cdn=False, cache=False, metrics=False)


@pytest.mark.parametrize("statements", [
    pytest.param([f"SELECT sleep_ms({SLEEP_MS})"], id="one statement"),
    pytest.param([f"SELECT sleep_ms({SLEEP_MS // 2})", f"SELECT sleep_ms({SLEEP_MS // 2})"], id="two"),
    pytest.param([f"SELECT sleep_ms({SLEEP_MS}) FROM no_such_table", f"SELECT sleep_ms({SLEEP_MS})"],
                 id="a failing statement counts too"),
])
def test_statement_time_is_added_to_the_request(statements: list[str]) -> None:
    seen: list[Any] = []
    app = _with_sleep(seen, statements)
    started = time.perf_counter()
    assert call_wsgi(app, "GET", "/").body == b"ok"
    wall = time.perf_counter() - started
    (ctx,) = seen
    # Bounds that hold however loaded the machine: the sleeps ran inside the statements, and
    # the statements inside the request.
    expected = sum(int(re.search(r"sleep_ms\((\d+)\)", statement).group(1))  # type: ignore[union-attr]
                   for statement in statements if "no_such_table" not in statement) / 1000
    assert expected <= ctx.db_seconds <= wall


def test_a_request_without_statements_has_no_database_time() -> None:
    seen: list[Any] = []
    assert call_wsgi(_with_sleep(seen, []), "GET", "/").body == b"ok"
    assert seen[0].db_seconds == 0.0
