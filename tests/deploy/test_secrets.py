"""Passwords apart from URLs: ``password`` / ``password_file`` for the database and for Redis,
as the compose file and the Kubernetes manifests pass them. A generated secret holds '@', ':'
or '/', which a URL would need percent-encoded; given separately, it reaches the driver as is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from werkzeug.test import Client

import scalekit
from scalekit.cache.commands import check
from scalekit.config import load_config
from scalekit.errors import ConfigError
from scalekit.pool.config import DatabaseConfig
from scalekit.pool.engines import engine_url
from tests.cache.tiers.servers import RedisServer

from .artefacts import SAMPLE_SECRETS, compose_app_environment, load_compose
from .harness import run_shipped_redis

PASSWORD = "p@ss:w/rd#%?1"
DATABASE_URL = "postgresql://shop@db.internal:5432/shop"


def _driver_password(database: DatabaseConfig) -> str:
    """The password psycopg2 is given for ``database`` (what reaches the server)."""
    _, arguments = PGDialect_psycopg2().create_connect_args(engine_url(database, ".scalekit"))
    return str(arguments["password"])


def test_compose_database_password_needs_no_url_encoding(tmp_path: Path) -> None:
    environment = compose_app_environment({**SAMPLE_SECRETS, "POSTGRES_PASSWORD": PASSWORD})
    database = load_config(environ=environment, cwd=tmp_path).pool.databases["default"]
    url = engine_url(database, ".scalekit")
    assert (url.host, url.port, url.database, url.username) == ("postgres", 5432, "shop", "scalekit")
    assert _driver_password(database) == PASSWORD


def test_password_file_is_read_as_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "database-password"
    secret.write_text(PASSWORD + "\n")   # `echo secret > file` and Kubernetes Secrets alike
    config = load_config(environ={"SCALEKIT_POOL_DATABASES_DEFAULT_URL": DATABASE_URL,
                                  "SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD_FILE": str(secret),
                                  "SCALEKIT_REDIS_URL": "redis://redis:6379/0",
                                  "SCALEKIT_REDIS_PASSWORD_FILE": str(secret)}, cwd=tmp_path)
    assert _driver_password(config.pool.databases["default"]) == PASSWORD
    assert config.redis.resolved_password() == PASSWORD
    assert PASSWORD not in repr(config)


@pytest.mark.parametrize("environ, key, says", [
    pytest.param({"SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD_FILE": "{missing}"},
                 "pool.databases.default.password_file", "readable", id="database: missing file"),
    pytest.param({"SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD_FILE": "{empty}"},
                 "pool.databases.default.password_file", "non-empty", id="database: empty file"),
    pytest.param({"SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD": "x",
        "SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD_FILE": "{secret}"},
                 "pool.databases.default.password_file", "one way", id="database: both"),
    pytest.param({"SCALEKIT_POOL_DATABASES_DEFAULT_URL": "postgresql://shop:in-url@db/shop",
                  "SCALEKIT_POOL_DATABASES_DEFAULT_PASSWORD": "x"},
                 "pool.databases.default.url", "one way", id="database: in the URL too"),
    pytest.param({"SCALEKIT_REDIS_URL": "redis://redis:6379/0", "SCALEKIT_REDIS_PASSWORD_FILE": "{missing}"},
                 "redis.password_file", "readable", id="redis: missing file"),
    pytest.param({"SCALEKIT_REDIS_URL": "redis://:in-url@redis:6379/0", "SCALEKIT_REDIS_PASSWORD_FILE": "{secret}"},
                 "redis.url", "one way", id="redis: in the URL too"),
])
def test_bad_password_settings_fail_at_start_up_naming_the_key(
        tmp_path: Path, environ: dict[str, str], key: str, says: str) -> None:
    (tmp_path / "secret").write_text("s3cret")
    (tmp_path / "empty").write_text("\n")
    paths = {name: str(tmp_path / name) for name in ("missing", "empty", "secret")}
    environ = {name: value.format(**paths) for name, value in environ.items()}
    with pytest.raises(ConfigError) as raised:
        load_config(environ=environ, cwd=tmp_path)
    assert raised.value.key == key and says in str(raised.value)
    assert "in-url" not in str(raised.value) and "s3cret" not in str(raised.value)


# --------------------------------------------------------------------------- Redis with AUTH


@pytest.fixture
def redis_with_password() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=("--requirepass", PASSWORD)).start()
    try:
        yield server
    finally:
        server.stop()


def _page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain"), ("cache-control", "public, max-age=60")])
    return [b"page"]


@pytest.mark.redis
def test_the_fleet_tier_authenticates_with_a_password_file(tmp_path: Path, redis_with_password: RedisServer) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text(PASSWORD + "\n")
    settings = {"redis": {"url": redis_with_password.url, "password_file": str(secret)},
                "cdn": False, "pool": False, "metrics": False}
    first = scalekit.wrap(_page, state_dir=str(tmp_path / "one"), **settings)
    second = scalekit.wrap(_page, state_dir=str(tmp_path / "two"), **settings)
    try:
        # Each instance's invalidation listener (its own authenticated connection) has heard
        # the fleet's log: until then entries count as possibly invalidated.
        for wrapped in (first, second):
            assert wrapped.runtime.services["cache.generations"].wait_connected(20.0)
        stored = Client(first).get("/", headers={"Host": "shop.test"})
        assert "stored" in stored.headers["cache-status"]
        # Another instance (its own L1 and L3) finds the entry in the password-protected L2.
        assert Client(second).get("/", headers={"Host": "shop.test"}).headers["cache-status"].endswith(
            "detail=redis")
        assert check(load_config(settings, environ={}, cwd=tmp_path))[0][1] is True
    finally:
        first.runtime.close()
        second.runtime.close()
    owner = redis.Redis(port=redis_with_password.port, password=PASSWORD)
    assert owner.dbsize() > 0
    owner.close()
    # The same server refuses a client without the password: the setting is what opened it.
    refused = check(load_config({"redis": {"url": redis_with_password.url}}, environ={}, cwd=tmp_path))
    assert refused[0][1] is False and "Authentication" in refused[0][2]


@pytest.mark.redis
def test_compose_redis_requires_its_password_and_never_shows_it(tmp_path: Path) -> None:
    password = 'p@ss "quoted" \\back:slash'   # quotes and backslashes survive the config line
    with run_shipped_redis(tmp_path / "redis", password) as port:
        with pytest.raises(redis.exceptions.RedisError, match="(?i)auth"):
            redis.Redis(port=port).ping()
        owner = redis.Redis(port=port, password=password)
        assert owner.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        assert owner.config_get("maxmemory") == {"maxmemory": str(256 * 1024 * 1024)}
        arguments = Path(f"/proc/{owner.info('server')['process_id']}/cmdline").read_bytes()
        assert b"p@ss" not in arguments and b"REDIS_PASSWORD" not in arguments
        owner.close()
        # The compose healthcheck: redis-cli with REDISCLI_AUTH, as the service's environment has.
        healthcheck = load_compose()["services"]["redis"]["healthcheck"]["test"][1:]
        result = subprocess.run([healthcheck[0], "-p", str(port), *healthcheck[1:]], capture_output=True, text=True,
            timeout=30,
                                env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": password}, check=False)
        assert result.stdout.strip() == "PONG", result.stdout + result.stderr
    environment = load_compose()["services"]["redis"]["environment"]
    assert environment["REDISCLI_AUTH"] == environment["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    assert compose_app_environment(SAMPLE_SECRETS)["SCALEKIT_REDIS_PASSWORD"] == SAMPLE_SECRETS["REDIS_PASSWORD"]
