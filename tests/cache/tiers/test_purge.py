"""The purge endpoint (pure decision, then through a wrapped app) and `scalekit invalidate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scalekit.cache.commands import check, invalidate_command
from scalekit.cache.hostgenerations import HostGenerations
from scalekit.cache.purge import Purge, PurgePolicy
from scalekit.config import load_config
from scalekit.messages import Response

TOKEN = "purge-token-0123456789abcdef"
POLICY = PurgePolicy(path="/_scalekit/purge", token=TOKEN)


@pytest.mark.parametrize(("method", "path", "query", "authorization", "surrogate_key", "expected"), [
    pytest.param("POST", "/_scalekit/purge", "tag=a&tag=b", f"Bearer {TOKEN}", None,
                 Purge(("a", "b")), id="query tags"),
    pytest.param("PURGE", "/_scalekit/purge", "", f"bearer {TOKEN}", "a  b", Purge(("a", "b")),
                 id="PURGE with Surrogate-Key"),
    pytest.param("POST", "/_scalekit/purge", "tag=a", None, None, 401, id="no token"),
    pytest.param("POST", "/_scalekit/purge", "tag=a", f"Bearer {TOKEN}x", None, 401, id="wrong token"),
    pytest.param("POST", "/_scalekit/purge", "tag=a", f"Basic {TOKEN}", None, 401, id="not bearer"),
    pytest.param("GET", "/_scalekit/purge", "tag=a", f"Bearer {TOKEN}", None, 405, id="GET"),
    pytest.param("POST", "/_scalekit/purge", "", f"Bearer {TOKEN}", None, 400, id="no tags"),
    pytest.param("POST", "/products/1", "tag=a", f"Bearer {TOKEN}", "a", None, id="other path"),
])
def test_purge_decisions(method: str, path: str, query: str, authorization: str | None,
                         surrogate_key: str | None, expected: Any) -> None:
    decision = POLICY.purge_request(method, path, query, authorization, surrogate_key)
    if isinstance(expected, int):
        assert isinstance(decision, Response) and decision.status == expected
        assert dict(decision.headers)["cache-control"] == "no-store"
    else:
        assert decision == expected


def test_without_a_token_the_endpoint_does_not_exist() -> None:
    policy = PurgePolicy(path="/_scalekit/purge", token=None)
    assert policy.purge_request("POST", "/_scalekit/purge", "tag=a", "Bearer anything", None) is None


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    import scalekit

    scalekit.tag("product:1")
    start_response("200 OK", [("content-type", "text/plain"), ("cache-control", "public, max-age=60")])
    return [environ["test.version"].encode()]


def test_purge_through_a_wrapped_app(tmp_path: Path) -> None:
    from werkzeug.test import Client

    import scalekit

    wrapped = scalekit.wrap(_app, cdn=False, pool=False, metrics=False, state_dir=str(tmp_path),
                            cache={"invalidation": {"purge_token": TOKEN}})
    client = Client(wrapped)
    assert client.get("/p", environ_overrides={"test.version": "v1"}).text == "v1"
    assert client.get("/p", environ_overrides={"test.version": "v2"}).text == "v1"  # cached
    # A client's own headers never purge: only the endpoint with the token does.
    assert client.get("/p", headers={"cache-control": "no-cache", "pragma": "no-cache",
                                     "x-purge": "1", "surrogate-key": "product:1"},
                      environ_overrides={"test.version": "v2"}).text == "v1"
    assert client.post("/_scalekit/purge?tag=product:1").status_code == 401
    assert client.get("/p", environ_overrides={"test.version": "v2"}).text == "v1"
    response = client.post("/_scalekit/purge?tag=product:1", headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json["purged"] == ["product:1"]
    # No Redis: the host's generations file has it, and no other process had to acknowledge.
    assert response.json["reach"] == "host" and response.json["acknowledged"] is True
    assert client.get("/p", environ_overrides={"test.version": "v2"}).text == "v2"


def test_cli_invalidate_without_redis_writes_the_host_file(tmp_path: Path) -> None:
    holder = HostGenerations(tmp_path / "cache" / "generations.sqlite3")
    stamp = holder.stamp(["product:1"], holder.sequence())
    result = CliRunner().invoke(invalidate_command, ["--tag", "product:1", "--tag", "x"],
                                env={"SCALEKIT_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    holder._load(holder._open())  # what its watcher thread does within ~50 ms
    assert stamp is not None and not holder.is_current(stamp)
    holder.close()


def test_cli_invalidate_reports_an_unreachable_redis(tmp_path: Path) -> None:
    result = CliRunner().invoke(invalidate_command, ["--tag", "t"], env={
        "SCALEKIT_STATE_DIR": str(tmp_path), "SCALEKIT_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 1
    assert "could not be reached" in result.output


@pytest.mark.redis
def test_cli_invalidate_reaches_the_fleet(tmp_path: Path, redis_server: Any) -> None:
    env = {"SCALEKIT_STATE_DIR": str(tmp_path), "SCALEKIT_REDIS_URL": redis_server.url,
           "SCALEKIT_REDIS_KEY_PREFIX": "cli:"}
    result = CliRunner().invoke(invalidate_command, ["--tag", "t"], env=env)
    assert result.exit_code == 0 and "in the fleet" in result.output, result.output
    assert redis_server.cli("hget", "{cli:invalidations}:state", "t:t").strip() == "1"


@pytest.mark.redis
def test_check_reports_redis_reachability(tmp_path: Path, redis_server: Any) -> None:
    up = check(load_config({"state_dir": str(tmp_path), "redis": {"url": redis_server.url}},
                           environ={}, cwd=tmp_path))
    down = check(load_config({"state_dir": str(tmp_path), "redis": {"url": "redis://u:pw@127.0.0.1:1/0"}},
                             environ={}, cwd=tmp_path))
    assert ("redis", True) == up[0][:2]
    assert ("redis", False) == down[0][:2] and "pw" not in down[0][2]
    assert all(ok for name, ok, _ in up if name == "cache disk")


# --------------------------------------------------------------------------- honest reach

def _purging_app(state_dir: Path, **config: Any) -> Any:
    import scalekit

    return scalekit.wrap(_app, cdn=False, pool=False, metrics=False, state_dir=str(state_dir),
                         cache={"invalidation": {"purge_token": TOKEN}}, **config)


def test_purge_answers_202_when_redis_is_unreachable_and_the_purge_is_queued(tmp_path: Path) -> None:
    from werkzeug.test import Client

    wrapped = _purging_app(tmp_path, redis={"url": "redis://127.0.0.1:1/0"})
    try:
        client = Client(wrapped)
        assert client.get("/p", environ_overrides={"test.version": "v1"}).text == "v1"
        response = client.post("/_scalekit/purge?tag=product:1",
                               headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 202
        assert response.json is not None and response.json["queued"] is True
        assert "queued for the fleet" in response.json["detail"]
        assert client.get("/p", environ_overrides={"test.version": "v2"}).text == "v2"  # here: done
    finally:
        wrapped.runtime.close()


def test_purge_answers_503_when_only_this_process_has_it(tmp_path: Path) -> None:
    """No Redis and a state directory that cannot be written (root ignores permission bits,
    so it is made impossible: it lies under a file): the other processes cannot hear it."""
    from werkzeug.test import Client

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    wrapped = _purging_app(blocker / "state")
    try:
        response = Client(wrapped).post("/_scalekit/purge?tag=product:1",
                                        headers={"authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert response.json is not None and response.json["reach"] == "process"
        assert response.json["queued"] is False
    finally:
        wrapped.runtime.close()


# --------------------------------------------------------------------------- the CLI finds the app's state

def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SCALEKIT_")}
    return subprocess.run([sys.executable, "-m", "scalekit.cli", "invalidate", *args], cwd=cwd,
                          env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60,
                          check=False)


def test_cli_elsewhere_without_redis_fails_saying_how_and_creates_nothing(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _cli("--tag", "product:1", cwd=elsewhere)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no scalekit state at" in result.stderr and "--app-dir" in result.stderr
    assert list(elsewhere.iterdir()) == []  # no stray ./.scalekit


def test_cli_finds_the_apps_state_like_the_app(tmp_path: Path) -> None:
    app_dir = tmp_path / "shop"
    app_dir.mkdir()
    (app_dir / "scalekit.toml").write_text('state_dir = "var/scalekit"\n')
    holder = HostGenerations(app_dir / "var" / "scalekit" / "cache" / "generations.sqlite3")
    stamp = holder.stamp(["product:1"], holder.sequence())  # the running app's view
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _cli("--tag", "product:1", "--app-dir", str(app_dir), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert "every process of this host" in result.stdout
    assert stamp is not None and not holder.is_current(stamp)  # it answered the doorbell
    assert _cli("--tag", "other", cwd=app_dir).returncode == 0  # from the app's directory
    assert list(elsewhere.iterdir()) == []
    holder.close()
