"""``scalekit invalidate`` and the cache's part of ``scalekit check``.

``scalekit invalidate --tag product:42 --tag category:7`` loads the same config as the app
(scalekit.toml / SCALEKIT_* env) and bumps the tags' generations: through Redis for the whole
fleet when ``redis.url`` is set, and in the host's generations file under ``state_dir`` (which
the app processes of this host follow within ~50 ms). It exits 1 if Redis was configured but
could not be reached, saying so: then only this host was invalidated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["COMMANDS", "check", "invalidate_tags"]


def invalidate_tags(config: Any, tags: tuple[str, ...]) -> tuple[bool, str]:
    """Invalidate ``tags`` as configured; (reached the fleet or no fleet configured, detail)."""
    from ..runtime import Runtime
    from .generations import HostGenerations
    from .tiers import build_generations

    runtime = Runtime(config)
    try:
        generations = build_generations(runtime)
        if runtime.config.redis.url is None:
            generations.invalidate(tags)
            if isinstance(generations, HostGenerations):
                return True, f"invalidated {len(tags)} tag(s) in this host's generations file"
            return False, ("nothing to invalidate from the command line: without redis.url and "
                           "with cache.disk off, generations live only inside each app process; "
                           "use the purge endpoint or scalekit.invalidate() in the app")
        sequence = generations.publish(tags)  # type: ignore[attr-defined]
        if sequence is None:
            generations.local.invalidate(tags)  # type: ignore[attr-defined]
            return False, ("Redis at redis.url could not be reached: invalidated on this host "
                           "only; run the command again once Redis is back")
        return True, f"invalidated {len(tags)} tag(s) across the fleet (generation {sequence})"
    finally:
        runtime.close()


@click.command("invalidate")
@click.option("--tag", "tags", multiple=True, required=True, metavar="TAG",
              help="A cache tag to invalidate (repeatable): --tag product:42 --tag category:7")
def invalidate_command(tags: tuple[str, ...]) -> None:
    """Invalidate every cached response carrying any of the given tags."""
    from ..config import load_config

    ok, detail = invalidate_tags(load_config(), tuple(tags))
    click.echo(detail, err=not ok)
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
    from .tiers.redis import REDIS_ERRORS, RedisConnections

    connections = RedisConnections(config.redis)
    try:
        client = connections.new_sync_client(socket_timeout_seconds=max(
            1.0, config.redis.socket_timeout_seconds))
        client.ping()  # PING only: managed Redis may forbid CLIENT / CONFIG / INFO
        kind = "cluster" if config.redis.cluster else "server"
        return "redis", True, f"{kind} at {_redacted(config.redis.url)} answers PING"
    except REDIS_ERRORS as error:
        return "redis", False, f"{_redacted(config.redis.url)}: {type(error).__name__}: {error}"
    finally:
        connections.close()


def _redacted(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
