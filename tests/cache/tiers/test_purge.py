"""The purge endpoint (pure decision, then through a wrapped app) and `scalekit invalidate`."""

from __future__ import annotations

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
