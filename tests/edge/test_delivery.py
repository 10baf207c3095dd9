"""How purges are delivered: 429 waits as asked, server errors retried with backoff until
accepted, a refused request dropped (not retried forever), and the queue durable before
invalidate() returns. Credentials never appear in logs, statuses, reprs or errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from prometheus_client import REGISTRY

from scalekit.cli import main
from scalekit.config import load_config
from scalekit.errors import ConfigError

from .doubles import VendorDouble, cloudflare_contract, fastly_contract, running_double
from .harness import REDIS_URL, redis_prefix, wrapped

pytestmark = [pytest.mark.redis]

TOKEN = "cf-token-0123456789-abcdefghij"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _cloudflare(double: VendorDouble, tmp_path: Path, prefix: str, **purge: Any) -> Any:
    return wrapped({"cdn": {"kind": "cloudflare", "urls": [double.url], "zone_id": ZONE,
                            "token": TOKEN}}, dialect="cloudflare", state_dir=tmp_path,
                   prefix=prefix, purge=purge)


def test_a_429_pauses_the_target_for_the_wait_it_asks(tmp_path: Path, prefix: str) -> None:
    double = cloudflare_contract(zone_id=ZONE, token=TOKEN)
    double.scripted.append((429, {"retry-after": "1", "content-type": "application/json"},
                            b'{"success": false, "errors": [{"code": 10000, "message": "rate limited"}]}'))
    limited = _sample("scalekit_edge_purge_calls_total", target="cdn", outcome="rate_limited")
    with running_double(double):
        app = _cloudflare(double, tmp_path, prefix)
        app.runtime.startup()
        try:
            app.runtime.invalidate(["product:1"])
            first, second = double.wait_for(lambda got: len(got) >= 2)[:2]
        finally:
            app.runtime.close()
    assert second.json() == first.json() == {"tags": ["product:1"]}
    assert second.at - first.at >= 0.99  # the edge asked for a second: nothing came sooner
    assert _sample("scalekit_edge_purge_calls_total", target="cdn", outcome="rate_limited") == limited + 1
    assert double.violations == []


def test_server_errors_are_retried_until_accepted(tmp_path: Path, prefix: str) -> None:
    double = cloudflare_contract(zone_id=ZONE, token=TOKEN)
    double.scripted += [(500, {}, b"oops"), (503, {}, b""), (502, {}, b"bad gateway")]
    sent = _sample("scalekit_edge_purge_calls_total", target="cdn", outcome="sent")
    with running_double(double):
        app = _cloudflare(double, tmp_path, prefix)
        app.runtime.startup()
        try:
            app.runtime.invalidate(["category:9"])
            received = double.wait_for(lambda got: len(got) >= 4)
            purger = app.runtime.services["cdn.purge"]
            assert purger.wait_idle(10.0)
            status = {s.queue: s for s in purger.status()}
        finally:
            app.runtime.close()
    assert [r.json() for r in received] == [{"tags": ["category:9"]}] * 4
    assert _sample("scalekit_edge_purge_calls_total", target="cdn", outcome="sent") == sent + 1
    assert status["redis"].length == 0 and status["redis"].last_failure == {}


def test_a_refused_purge_is_dropped_and_the_next_one_still_sent(tmp_path: Path, prefix: str) -> None:
    double = cloudflare_contract(zone_id=ZONE, token=TOKEN)
    double.scripted.append((400, {"content-type": "application/json"},
                            b'{"success": false, "errors": [{"code": 1012, "message": "bad tag"}]}'))
    dropped = _sample("scalekit_edge_purges_dropped_total", target="cdn", reason="rejected")
    with running_double(double):
        app = _cloudflare(double, tmp_path, prefix)
        app.runtime.startup()
        try:
            app.runtime.invalidate(["refused"])
            double.wait_for(lambda got: len(got) >= 1)
            purger = app.runtime.services["cdn.purge"]
            assert purger.wait_idle(10.0)
            app.runtime.invalidate(["accepted"])
            received = double.wait_for(lambda got: len(got) >= 2)
            assert purger.wait_idle(10.0)
        finally:
            app.runtime.close()
    assert [r.json() for r in received] == [{"tags": ["refused"]}, {"tags": ["accepted"]}]
    assert _sample("scalekit_edge_purges_dropped_total", target="cdn", reason="rejected") == dropped + 1


def test_queued_in_redis_before_invalidate_returns(tmp_path: Path, prefix: str) -> None:
    """No consumer runs here (the runtime never started): the purge must already be in the
    stream when invalidate() returns, so a crash right after loses nothing."""
    app = wrapped({"edge": {"kind": "varnish", "urls": ["http://127.0.0.1:9"]}}, dialect="varnish",
                  state_dir=tmp_path, prefix=prefix)
    try:
        app.runtime.invalidate(["product:42", "table:products"])
        client = redis.Redis.from_url(REDIS_URL)
        entries = client.xrange(f"{prefix}{{edge-purges}}:q:edge")
        assert len(entries) == 1
        assert entries[0][1][b"i"] == b'["t:product:42","t:table:products"]'
        # Queued again while still waiting: nothing new (the entry queued will send it).
        app.runtime.invalidate(["product:42"])
        assert client.xlen(f"{prefix}{{edge-purges}}:q:edge") == 1
        client.close()
    finally:
        app.runtime.close()


def test_credentials_never_shown(tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A token from a secret file; the vendor refuses it and echoes the request's headers in
    its error: logs, `scalekit purge status`, `scalekit check`, reprs and config errors show
    no credential."""
    secret = "fastly-SECRET-from-file-7f3a9c"
    token_file = tmp_path / "fastly-token"
    token_file.write_text(secret + "\n")
    double = fastly_contract(service_id="svc", token=secret)
    echo = (401, {"content-type": "application/json"}, f'{{"msg": "bad key {secret}"}}'.encode())
    double.scripted += [echo] * 50
    caplog.set_level(logging.DEBUG)
    with running_double(double):
        target = {"kind": "fastly", "urls": [double.url], "service_id": "svc",
                  "token_file": str(token_file)}
        app = wrapped({"fastly": target}, dialect="fastly", state_dir=tmp_path, prefix=prefix)
        app.runtime.startup()
        try:
            app.runtime.invalidate(["product:1"])
            double.wait_for(lambda got: len(got) >= 1)
            purger = app.runtime.services["cdn.purge"]
            deadline = time.monotonic() + 20
            while not any(s.last_failure for s in purger.status()) and time.monotonic() < deadline:
                time.sleep(0.02)
            status = purger.status()
            failure = next(s.last_failure for s in status if s.last_failure)
            assert failure["reason"] == 'HTTP 401: {"msg": "bad key ***"}'
            shown = [caplog.text, repr(app.runtime.config), repr(status)]
            environment = {"SCALEKIT_STATE_DIR": str(tmp_path), "SCALEKIT_REDIS_URL": REDIS_URL,
                           "SCALEKIT_REDIS_KEY_PREFIX": prefix, "SCALEKIT_CDN_SURROGATE_KEYS": "fastly",
                           "SCALEKIT_CDN_PURGE_TARGETS_FASTLY_KIND": "fastly",
                           "SCALEKIT_CDN_PURGE_TARGETS_FASTLY_URLS": double.url,
                           "SCALEKIT_CDN_PURGE_TARGETS_FASTLY_SERVICE_ID": "svc",
                           "SCALEKIT_CDN_PURGE_TARGETS_FASTLY_TOKEN": secret}
            for command in (["purge", "status"], ["purge", "status", "--json"], ["check"]):
                result = CliRunner().invoke(main, command, env=environment, catch_exceptions=False)
                shown.append(result.output)
        finally:
            app.runtime.close()
    assert double.received and all(r.headers["fastly-key"] == secret for r in double.received)
    assert "401" in caplog.text  # the failure itself is reported...
    for text in shown:
        assert secret not in text  # ...never the credential
    with pytest.raises(ConfigError) as error:
        load_config({"cdn": {"surrogate_keys": "varnish", "purge": {"targets": {"v": {
            "kind": "varnish", "urls": ["http://varnish:6081"], "token": secret}}}}},
            environ={}, cwd="/nonexistent")
    assert secret not in str(error.value) and "token" in str(error.value)
