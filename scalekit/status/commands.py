"""``scalekit top``: the status page in a terminal, refreshed every few seconds.

It reads ``status.json`` from the running app over HTTP (so it shows every gunicorn worker, as
the page does), authenticating with ``metrics.token`` from the same configuration the app reads
(``scalekit.toml``, ``SCALEKIT_*``) unless ``--token`` is given.

>>> from click.testing import CliRunner
>>> CliRunner().invoke(top, ["--help"]).exit_code
0
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

from .text import render_text

__all__ = ["COMMANDS", "fetch_status", "top"]

TIMEOUT_SECONDS = 10.0


def fetch_status(url: str, token: str | None) -> dict[str, Any]:
    """The status document at ``url``; a :class:`click.ClickException` saying what to do if
    the app cannot be reached or refuses."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
    except urllib.error.HTTPError as error:
        error.close()  # it holds the connection
        raise click.ClickException(_refusal(url, error.code, token)) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise click.ClickException(f"cannot reach {url}: {reason}. Is the app running there? "
                                   "Point --url at it (scalekit serve listens on "
                                   "http://127.0.0.1:8000 unless --bind says otherwise).") from None
    except ValueError:
        raise click.ClickException(f"{url} did not answer with the status document: is the "
                                   "app's status page on (metrics.status_page), and is "
                                   "metrics.status_path here the app's?") from None


def _refusal(url: str, status: int, token: str | None) -> str:
    if status == 401:
        hint = ("the token given is not the app's metrics.token" if token else
                "the app requires metrics.token: pass --token or set SCALEKIT_METRICS_TOKEN")
        return f"{url} answered 401: {hint}."
    if status == 403:
        return (f"{url} answered 403: this address is not in the app's metrics.allow_from "
                "(and the app has no metrics.token to pass instead).")
    if status == 404:
        return (f"{url} answered 404: the status page is off or elsewhere (metrics.status_page, "
                "metrics.status_path, metrics.enabled).")
    return f"{url} answered HTTP {status}."


def _status_url(base_url: str, status_path: str) -> str:
    if not base_url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{base_url!r} is not an http:// or https:// URL", param_hint="--url")
    return base_url.rstrip("/") + status_path + "status.json"


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="Base URL of the running app.")
@click.option("--token", default=None, help="Bearer token (default: metrics.token of the config).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print the status once and exit.")
@click.option("-n", "--iterations", type=click.IntRange(min=1), default=None,
              help="Refresh this many times, then exit.")
def top(url: str, token: str | None, interval: float, once: bool, iterations: int | None) -> None:
    """Show the app's live status (requests/s, hit ratios, time saved, invalidation lag,
    pools, tiers) in the terminal, as its /_scalekit/ page does."""
    from ..config import load_config
    from ..errors import ConfigError

    try:
        metrics = load_config().metrics
    except ConfigError as error:  # the config top reads to find the page and its token
        raise click.ClickException(f"{error} (scalekit top reads the app's configuration to "
                                   "find its status page and token)") from None
    status_url = _status_url(url, metrics.status_path)
    token = token if token is not None else metrics.token
    count = 1 if once else iterations
    shown = 0
    try:
        while True:
            document = fetch_status(status_url, token)
            text = render_text(document["tables"], taken_at=float(document["taken_at"]), source=url)
            if count != 1 and sys.stdout.isatty():
                click.clear()
            click.echo(text + ("\n" if count != 1 else ""))
            shown += 1
            if count is not None and shown >= count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return


COMMANDS = [top]
