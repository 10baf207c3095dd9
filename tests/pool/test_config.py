"""Pool configuration: defaults, layering from env/toml, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalekit.config import load_config
from scalekit.errors import ConfigError
from scalekit.pool.config import DatabaseConfig, PoolConfig


def test_defaults_need_nothing_installed() -> None:
    config = PoolConfig()
    default = config.databases["default"]
    assert default.url is None  # the SQLite file under state_dir
    assert (default.pool_size, default.max_overflow, default.max_connections) == (5, 10, 15)
    assert default.reset_statement == "auto" and default.pre_ping
    assert config.track_tables and not config.change_feed.enabled


def test_environment_sets_a_named_database(tmp_path: Path) -> None:
    config = load_config(environ={
        "SCALEKIT_POOL_DATABASES_DEFAULT_URL": "postgresql://app@db/shop",
        "SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZE": "20",
        "SCALEKIT_POOL_DATABASES_DEFAULT_MAX_WAITING": "50",
    }, cwd=tmp_path)
    default = config.pool.databases["default"]
    assert (default.url, default.pool_size, default.max_waiting) == ("postgresql://app@db/shop", 20, 50)


def test_toml_declares_several_databases(tmp_path: Path) -> None:
    (tmp_path / "scalekit.toml").write_text(
        '[pool.databases.default]\nurl = "sqlite:///a.db"\n'
        '[pool.databases.reports]\nurl = "postgresql://r@db/reports"\npool_timeout_seconds = 2.5\n'
        '[pool.change_feed]\nenabled = true\ndatabase = "reports"\n')
    config = load_config(environ={}, cwd=tmp_path)
    assert list(config.pool.databases) == ["default", "reports"]
    assert config.pool.databases["reports"].pool_timeout_seconds == 2.5
    assert config.pool.change_feed.database == "reports"


@pytest.mark.parametrize(("settings", "key"), [
    pytest.param({"databases": {"main": {}}}, "pool.databases", id="default is required"),
    pytest.param({"databases": {"default": {"pool_size": 0}}}, "pool.databases.default.pool_size",
                 id="pool_size below 1"),
    pytest.param({"databases": {"default": {"pool_timeout_seconds": 0}}},
                 "pool.databases.default.pool_timeout_seconds", id="zero timeout would never wait"),
    pytest.param({"databases": {"default": {"url": "not a url"}}}, "pool.databases.default.url",
                 id="not a SQLAlchemy URL"),
    pytest.param({"change_feed": {"channel": "bad channel!"}}, "pool.change_feed.channel",
                 id="channel must be an identifier"),
    pytest.param({"change_feed": {"enabled": True, "database": "nope"}}, "pool.change_feed.database",
                 id="change feed on an unknown database"),
])
def test_bad_values_name_the_key(settings: dict[str, object], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"pool": settings}, environ={}, cwd=tmp_path)
    assert raised.value.key == key


def test_password_is_hidden_in_url_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        DatabaseConfig(url="postgresql:/app:s3cret@db/shop")  # one slash short
    assert "s3cret" not in str(raised.value)
    assert "db/shop" in str(raised.value)


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pool_size"):
        load_config({"pool": {"databases": {"default": {"pool_sise": 3}}}}, environ={}, cwd=tmp_path)
