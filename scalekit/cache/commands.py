"""``scalekit invalidate`` and the cache's part of ``scalekit check``.

``scalekit invalidate --tag product:42 --tag category:7`` finds the app's state the way the app
does: the config of the app's directory (``--app-dir``, default the current one: its
scalekit.toml or ``[tool.scalekit]``, and ``SCALEKIT_*`` / ``SCALEKIT_CONFIG`` as usual), and a
relative ``state_dir`` taken from that directory. Then:

- with ``redis.url``: the invalidation goes into the fleet's log, and the command waits briefly
  until every live instance has applied it (naming those that have not). Exit 1 if Redis could
  not be reached: nothing reached the fleet (the host's generations file, if there is one, got
  it, and the output says so).
- without Redis: it goes into the host's generations file, which the app's processes on this
  host follow (they acknowledge at once). Exit 1 if there is no such file: the app never ran
  here with this config, so the command says where it looked and how to point it elsewhere.

It never creates a state directory of its own, and never prints success for nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["COMMANDS", "check", "invalidate_tags"]


def invalidate_tags(config: Any, tags: tuple[str, ...], *,
                    app_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Invalidate ``tags`` as the app at ``app_dir`` would; (reached the fleet, what happened)."""
    from .generations import LocalGenerations
    from .hostgenerations import HostGenerations
    from .tiers import generations_path

    base = Path(app_dir) if app_dir is not None else Path.cwd()
    host_file = generations_path(config)
    if not host_file.is_absolute():
        host_file = base / host_file
    has_host_file = config.cache.disk.enabled and host_file.is_file()
    if config.redis.url is None:
        if not config.cache.disk.enabled:
            return False, ("nothing to invalidate from the command line: without redis.url and "
                           "with cache.disk off, generations live only inside each app process; "
                           "use the purge endpoint or scalekit.invalidate() in the app")
        if not has_host_file:
            return False, _no_state(host_file, base, config)
        generations = HostGenerations(host_file)
        try:
            result = generations.invalidate(tags)
        finally:
            generations.close()
        return result.reached_fleet, result.describe()
    return _invalidate_fleet(config, tags, HostGenerations(host_file) if has_host_file
                             else LocalGenerations())


def _invalidate_fleet(config: Any, tags: tuple[str, ...], local: Any) -> tuple[bool, str]:
    from .tiers.fleet import FleetGenerations
    from .tiers.redis import RedisConnections, redacted_url

    connections = RedisConnections(config.redis)
    invalidation = config.cache.invalidation
    generations = FleetGenerations(
        local, connections, channel=invalidation.channel,
        max_staleness_seconds=invalidation.max_staleness_seconds,
        heartbeat_seconds=invalidation.heartbeat_seconds,
        # A person waits at the terminal: give slow instances a moment longer than a request.
        ack_timeout_seconds=max(invalidation.ack_timeout_seconds, 0.5))
    try:
        result = generations.invalidate(tags)
    finally:
        generations.close()
        connections.close()
    if result.reach == "fleet":
        return True, result.describe()
    where = "this host's generations file" if result.reach == "host" else "nowhere"
    return False, (f"Redis at redis.url ({redacted_url(config.redis.url)}) could not be reached: "
                   f"the fleet was not invalidated (recorded in {where}); run the command again "
                   "once Redis answers")


def _no_state(host_file: Path, base: Path, config: Any) -> str:
    return (f"no scalekit state at {host_file}: the app has not run from {base} with this "
            f"config (state_dir = {config.state_dir!r}), so there is nothing here for its "
            "processes to follow. Run this command from the app's directory, pass --app-dir DIR, "
            "or set SCALEKIT_STATE_DIR (or state_dir in the app's scalekit.toml) to the "
            "directory the app uses.")


@click.command("invalidate")
@click.option("--tag", "tags", multiple=True, required=True, metavar="TAG",
              help="A cache tag to invalidate (repeatable): --tag product:42 --tag category:7")
@click.option("--app-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="The directory the app runs from (its config, and a relative state_dir, "
                   "are read from there). Default: the current directory.")
def invalidate_command(tags: tuple[str, ...], app_dir: Path | None) -> None:
    """Invalidate every cached response carrying any of the given tags."""
    from ..config import load_config

    config = load_config(cwd=app_dir)
    ok, detail = invalidate_tags(config, tuple(tags), app_dir=app_dir)
    click.echo(detail, err=not ok)
    if ok:  # the edge too (cdn.purge); pointless while the fleet still has the old pages
        from ..cdn.purge.service import queue_purges

        ok, edge = queue_purges(config, tuple(tags), app_dir=app_dir)
        if edge:
            click.echo(edge, err=not ok)
    if not ok:
        sys.exit(1)


COMMANDS: list[click.Command] = [invalidate_command]


def check(config: Any) -> list[tuple[str, bool, str]]:
    """(component, reachable?, detail) for Redis and the disk tier's directory."""
    results: list[tuple[str, bool, str]] = []
    if config.redis.url is None:
        results.append(("redis", True, "not configured: L2 off, invalidation per host"))
    else:
        results.append(_check_redis(config))
    if config.cache.disk.enabled:
        directory = Path(config.state_dir) / config.cache.disk.path
        try:
            directory.mkdir(parents=True, exist_ok=True)
            writable = os.access(directory, os.W_OK)
        except OSError as error:
            results.append(("cache disk", False, f"{directory}: {error}"))
        else:
            results.append(("cache disk", writable,
                            f"{directory} {'writable' if writable else 'not writable'}"))
    return results


def _check_redis(config: Any) -> tuple[str, bool, str]:
    from .tiers.redis import RedisConnections

    connections = RedisConnections(config.redis)
    try:
        # A person waits for the answer: a slow Redis is not a down one here.
        state, detail = connections.probe(timeout_seconds=max(1.0, config.redis.socket_timeout_seconds))
    finally:
        connections.close()
    return "redis", state == "ok", detail
