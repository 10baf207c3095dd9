"""``scalekit top`` against an app served over real HTTP (wsgiref, in a thread): what it prints,
how it authenticates, and what it says when it cannot show anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from click.testing import CliRunner

from scalekit.status.commands import top
from tests.status.support import StatusDriver

TOKEN = "s3cret-token-0123456789"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def served(**settings: Any) -> Iterator[str]:
    """The cached test app wrapped with ``settings``, on 127.0.0.1 at a free port."""
    app = StatusDriver("wsgi", **settings).app
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=20)


def run_top(*args: str, **environment: str) -> Any:
    return CliRunner().invoke(top, list(args), env=environment or None, catch_exceptions=False)


def test_top_prints_every_table_once(no_scalekit_env: None) -> None:
    with served() as url:
        result = run_top("--url", url, "--once")
    assert result.exit_code == 0, result.output
    titles = ["Traffic", "Time saved by cache hits", "Cache tiers", "Top routes by time saved",
              "Invalidations", "Connection pools"]
    lines = result.output.splitlines()
    assert [line for line in lines if line in titles] == titles


def test_top_refreshes_the_given_number_of_times(no_scalekit_env: None) -> None:
    with served() as url:
        result = run_top("--url", url, "-n", "2", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert result.output.count("scalekit top — ") == 2
    # The second reading is half a second after the first: it has rates.
    assert "requests per second" in result.output.split("scalekit top — ")[2]


@pytest.mark.parametrize(("settings", "args", "environment", "expected"), [
    pytest.param({"token": TOKEN}, [], {}, "answered 401: the app requires metrics.token",
                 id="token required, none given"),
    pytest.param({"token": TOKEN}, ["--token", "wrong-token-wrong-token"], {},
                 "answered 401: the token given is not the app's metrics.token", id="wrong token"),
    pytest.param({"allow_from": ["10.0.0.0/8"]}, [], {}, "answered 403: this address is not in",
                 id="address not allowed"),
    pytest.param({"status_page": False}, [], {}, "did not answer with the status document: is the "
                 "app's status page on (metrics.status_page)", id="page switched off: the app answers"),
])
def test_top_says_why_it_shows_nothing(no_scalekit_env: None, settings: dict[str, Any], args: list[str],
                                       environment: dict[str, str], expected: str) -> None:
    with served(metrics=settings) as url:
        result = run_top("--url", url, "--once", *args, **environment)
    assert result.exit_code == 1
    assert expected in result.output


@pytest.mark.parametrize("how", ["option", "config"])
def test_top_authenticates_with_the_token(no_scalekit_env: None, how: str) -> None:
    with served(metrics={"token": TOKEN}) as url:
        if how == "option":
            result = run_top("--url", url, "--once", "--token", TOKEN)
        else:  # the app's own configuration, as `scalekit top` run beside it reads it
            result = run_top("--url", url, "--once", SCALEKIT_METRICS_TOKEN=TOKEN)
    assert result.exit_code == 0, result.output
    assert "Traffic" in result.output


def test_top_names_an_unreachable_url() -> None:
    with served() as url:
        pass  # stopped: nothing listens there now
    result = run_top("--url", url, "--once")
    assert result.exit_code == 1
    assert f"cannot reach {url}/_scalekit/status.json" in result.output and "--url" in result.output
    assert "is not an http:// or https:// URL" in run_top("--url", "127.0.0.1:8000").output


def test_top_names_a_bad_configuration(no_scalekit_env: None) -> None:
    result = run_top("--once", SCALEKIT_METRICS_STATUS_PATH="no-slash")
    assert result.exit_code == 1
    assert "metrics.status_path" in result.output and "scalekit top reads the app's configuration" in result.output
