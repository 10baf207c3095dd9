"""``scalekit purge status``: what the edge purge queues hold, and ``scalekit check``'s rows.

    scalekit purge status            # one line per target and queue
    scalekit purge status --json     # the same as JSON, for scripts and alerts

It reads the app's configuration like every command (scalekit.toml / SCALEKIT_* env), looks
at the Redis streams (when Redis is configured) and at the host's queue file, and exits 1
when a queue could not be read or a target's last attempt failed. Credentials are never
printed: a target shows its kind and where it sends, nothing else.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from .vendors import resolve_addresses

__all__ = ["check", "purge_group"]


@click.group(name="purge")
def purge_group() -> None:
    """Edge purges (cdn.purge): the queues that carry invalidations to Varnish and CDNs."""


@purge_group.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.option("--app-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="The directory the app runs from (its config, and a relative state_dir). "
                   "Default: the current directory.")
def status_command(as_json: bool, app_dir: Path | None) -> None:
    """Show each target's queue: length, pending, consumers, oldest purge's age, last failure."""
    from ...config import load_config
    from ...runtime import Runtime
    from .localqueue import LocalPurgeQueue
    from .service import local_queue_path, queue_status

    config = load_config(cwd=app_dir)
    purge = config.cdn.purge
    if not purge.active:
        click.echo("edge purges: no cdn.purge targets configured")
        return
    runtime = Runtime(config)
    local = LocalPurgeQueue(_in_app_dir(local_queue_path(config), app_dir))
    problems: list[str] = []
    try:
        from ...cache.tiers import redis_connections

        statuses = queue_status(purge, redis_connections(runtime), local, now=time.time())
    except Exception as error:  # noqa: BLE001 - Redis unreachable: say so, exit 1
        statuses, problems = [], [f"cannot read the queue: {type(error).__name__}: {error}"]
    finally:
        local.close()
        runtime.close()
    problems += [f"{status.target}: last attempt failed" for status in statuses if status.last_failure]
    if as_json:
        document = {"targets": _targets(config), "queues": [asdict(s) for s in statuses],
                    "problems": problems}
        click.echo(json.dumps(document, indent=2))
    else:
        for line in _lines(config, statuses, problems):
            click.echo(line)
    if problems:
        sys.exit(1)


def _in_app_dir(path: Path, app_dir: Path | None) -> Path:
    return path if path.is_absolute() or app_dir is None else app_dir / path


def _targets(config: Any) -> dict[str, dict[str, Any]]:
    """What may be shown of each target: kind, where it sends, what it purges."""
    shown = {}
    for name, target in config.cdn.purge.targets.items():
        where = list(target.urls) or {"fastly": ["https://api.fastly.com"],
                                      "cloudflare": ["https://api.cloudflare.com"],
                                      "akamai": [f"network {target.network}"]}.get(target.kind or "", [])
        shown[name] = {"kind": target.kind, "sends_to": where, "soft": target.soft,
                       "url_purges": target.url_purges}
    return shown


def _lines(config: Any, statuses: list[Any], problems: list[str]) -> list[str]:
    lines = []
    for name, target in _targets(config).items():
        lines.append(f"target {name}: {target['kind']} -> {', '.join(target['sends_to'])}"
                     f"{' (soft)' if target['soft'] else ''}")
    for status in statuses:
        oldest = "-" if status.oldest_age_seconds is None else f"{status.oldest_age_seconds:.1f} s"
        line = (f"  {status.target} [{status.queue}]: {status.length} queued, {status.pending} "
                f"being sent, {status.consumers} consumer(s) known, oldest {oldest}")
        failure = status.last_failure
        if failure:
            line += f"; last failure ({failure.get('count', 1)} in a row): {failure.get('reason')}"
        lines.append(line)
    if not statuses and not problems:
        lines.append("  nothing queued")
    lines.extend(f"FAIL {problem}" for problem in problems)
    return lines


def check(config: Any) -> list[tuple[str, bool, str]]:
    """``scalekit check`` rows: each target configured (credentials read, never shown); each
    Varnish instance's addresses answer TCP."""
    rows = []
    for name, target in config.cdn.purge.targets.items() if config.cdn.purge.active else ():
        if target.kind != "varnish":
            detail = f"{target.kind}: credentials read (not verified: that would purge)"
            rows.append((f"edge purge {name}", True, detail))
            continue
        for url in target.urls:
            parts = urlsplit(url)
            port = parts.port or 80
            try:
                addresses = resolve_addresses(parts.hostname or "", port)
                for address in addresses:
                    socket.create_connection((address, port), timeout=2.0).close()
            except OSError as error:
                rows.append((f"edge purge {name}", False, f"varnish at {url}: {error}"))
            else:
                rows.append((f"edge purge {name}", True,
                             f"varnish at {url}: {len(addresses)} instance(s) answer"))
    return rows
