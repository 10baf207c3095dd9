"""``scalekit check`` for the pool: reachability, settings, capacity warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalekit.config import load_config
from scalekit.pool.commands import COMMANDS, check

from ..servers import free_port
from .helpers import pg_url


def config_for(tmp_path: Path, **databases: dict[str, object]) -> object:
    return load_config({"pool": {"databases": databases}}, environ={}, cwd=tmp_path)


def test_default_sqlite_is_reachable(tmp_path: Path) -> None:
    config = load_config({"state_dir": str(tmp_path)}, environ={}, cwd=tmp_path)
    [(name, ok, detail)] = check(config)
    assert (name, ok) == ("database default", True)
    assert "scalekit.sqlite3" in detail and "pool_size=5 max_overflow=10" in detail


def test_unreachable_database_is_reported_not_raised(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    [(_name, ok, detail)] = check(config_for(tmp_path, default={"url": url, "connect_timeout_seconds": 2}))
    assert not ok and "unreachable" in detail


@pytest.mark.postgres
def test_capacity_warning_when_workers_exceed_max_connections(tmp_path: Path,
                                                              postgres_available: None) -> None:
    config = config_for(tmp_path, default={"url": pg_url("sk_check"), "pool_size": 10, "max_overflow": 5})
    rows = check(config, workers=4)
    assert rows[0][:2] == ("database default", True) and len(rows) == 1  # 60 fits in 100
    rows = check(config, workers=8)
    assert rows[1][:2] == ("database default capacity", False)
    assert "8 worker(s) x (pool_size + max_overflow = 15) = 120" in rows[1][2]


def test_db_group_is_exported() -> None:
    assert [command.name for command in COMMANDS] == ["db"]
    assert {"install-change-feed", "uninstall-change-feed", "status"} <= set(COMMANDS[0].commands)  # type: ignore[attr-defined]
