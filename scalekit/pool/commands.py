"""``scalekit db ...`` and the pool's part of ``scalekit check``.

``scalekit db install-change-feed --table products --table orders`` installs the Postgres
triggers of the change feed (see :mod:`scalekit.pool.changefeed`); the app instances pick the
writes up once ``pool.change_feed.enabled = true``. ``scalekit db status`` prints what
``scalekit check`` reports for the databases: reachability, pool settings, and a warning when
workers x (pool_size + max_overflow) exceeds the server's max_connections.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

__all__ = ["COMMANDS", "check"]


def _workers(workers: int | None) -> int:
    if workers is not None:
        return workers
    # gunicorn and most platforms read WEB_CONCURRENCY for the worker count.
    try:
        return max(1, int(os.environ.get("WEB_CONCURRENCY", "1")))
    except ValueError:
        return 1


def check(config: Any, *, workers: int | None = None) -> list[tuple[str, bool, str]]:
    """(component, reachable?, detail) per database, plus a row per capacity warning."""
    from .engines import engine_url
    from .policy import capacity_warning

    results: list[tuple[str, bool, str]] = []
    if not config.pool.enabled:
        return [("pool", True, "off (pool.enabled = false)")]
    count = _workers(workers)
    for name, database in config.pool.databases.items():
        url = engine_url(database, config.state_dir)
        settings = (f"pool_size={database.pool_size} max_overflow={database.max_overflow} "
                    f"pool_timeout={database.pool_timeout_seconds}s pre_ping={database.pre_ping} "
                    f"recycle={database.recycle_seconds}s max_waiting={database.max_waiting}")
        try:
            server_max, reserved = _probe(url, database.connect_timeout_seconds)
        except Exception as exc:  # noqa: BLE001  (report any failure as unreachable)
            results.append((f"database {name}", False,
                            f"{url.render_as_string()} unreachable: {_first_line(exc)}; {settings}"))
            continue
        results.append((f"database {name}", True, f"{url.render_as_string()} reachable; {settings}"))
        if server_max is not None:
            warning = capacity_warning(database=name, workers=count,
                                       max_connections_per_process=database.max_connections,
                                       server_max_connections=server_max,
                                       reserved_connections=reserved)
            if warning is not None:
                results.append((f"database {name} capacity", False, warning))
    return results


def _probe(url: Any, timeout_seconds: float) -> tuple[int | None, int]:
    """Connect once; for Postgres also read max_connections and the reserved slots."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # as the app would
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, int(timeout_seconds))
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            if url.get_backend_name() != "postgresql":
                connection.exec_driver_sql("select 1")
                return None, 0
            server_max = int(connection.exec_driver_sql("SHOW max_connections").scalar_one())
            reserved = int(connection.exec_driver_sql(
                "SHOW superuser_reserved_connections").scalar_one())
            return server_max, reserved
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@click.group("db")
def db_group() -> None:
    """The pooled databases: change feed triggers and status."""


def _target(database: str | None, url: str | None) -> tuple[Any, Any]:
    from ..config import load_config
    from .engines import engine_url

    config = load_config()
    name = database or config.pool.change_feed.database
    if url is not None:
        from .config import DatabaseConfig

        return config, engine_url(DatabaseConfig(url=url), config.state_dir)
    if name not in config.pool.databases:
        raise click.BadParameter(f"no database {name!r}; configured: "
                                 f"{', '.join(config.pool.databases)}", param_hint="--database")
    return config, engine_url(config.pool.databases[name], config.state_dir)


def _run_statements(url: Any, statements: list[str]) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if url.get_backend_name() != "postgresql":
        click.echo(f"the change feed needs Postgres; {url.render_as_string()} is "
                   f"{url.get_backend_name()}", err=True)
        sys.exit(2)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:  # all triggers or none
            for statement in statements:
                connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


@db_group.command("install-change-feed")
@click.option("--table", "tables", multiple=True, required=True, metavar="TABLE",
              help="A table whose writes invalidate table:TABLE (repeatable; schema.table allowed).")
@click.option("--database", default=None, help="Configured database name (default: "
              "pool.change_feed.database).")
@click.option("--url", default=None, help="A SQLAlchemy URL instead of a configured database.")
@click.option("--channel", default=None, help="NOTIFY channel (default: pool.change_feed.channel).")
def install_change_feed_command(tables: tuple[str, ...], database: str | None, url: str | None,
                                channel: str | None) -> None:
    """Install Postgres triggers that NOTIFY the app instances of every committed write."""
    from .changefeed import install_statements

    config, target = _target(database, url)
    channel = channel or config.pool.change_feed.channel
    _run_statements(target, install_statements(tables, channel=channel))
    click.echo(f"change feed installed on {', '.join(tables)} (channel {channel}); enable it with "
               "pool.change_feed.enabled = true")


@db_group.command("uninstall-change-feed")
@click.option("--table", "tables", multiple=True, required=True, metavar="TABLE")
@click.option("--database", default=None)
@click.option("--url", default=None)
def uninstall_change_feed_command(tables: tuple[str, ...], database: str | None,
                                  url: str | None) -> None:
    """Remove the change-feed triggers from the given tables."""
    from .changefeed import uninstall_statements

    _, target = _target(database, url)
    _run_statements(target, uninstall_statements(tables))
    click.echo(f"change feed removed from {', '.join(tables)}")


@db_group.command("status")
@click.option("--workers", type=int, default=None,
              help="Worker processes per instance x instances (default: $WEB_CONCURRENCY or 1).")
def status_command(workers: int | None) -> None:
    """Reachability and pool settings of each database; capacity warnings."""
    from ..config import load_config

    failed = False
    for component, ok, detail in check(load_config(), workers=workers):
        click.echo(f"{'ok  ' if ok else 'FAIL'} {component}: {detail}")
        failed = failed or not ok
    if failed:
        sys.exit(1)


COMMANDS: list[click.Command] = [db_group]
