"""``scalekit invalidate`` purges the edge too (queued for the fleet's consumers), and
``scalekit purge status`` shows the queues."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalekit.cli import main

from .doubles import fastly_contract, running_double
from .harness import REDIS_URL, redis_prefix, wrapped

pytestmark = [pytest.mark.redis]

TOKEN = "fastly-token-cli-0123456789"


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


def test_scalekit_invalidate_purges_the_edge(tmp_path: Path, prefix: str) -> None:
    with running_double(fastly_contract(service_id="svc", token=TOKEN)) as double:
        target = {"kind": "fastly", "urls": [double.url], "service_id": "svc", "token": TOKEN}
        app = wrapped({"fastly": target}, dialect="fastly", state_dir=tmp_path, prefix=prefix)
        app.runtime.startup()  # an instance of the fleet: its consumer sends what the CLI queues
        environment = {"SCALEKIT_STATE_DIR": str(tmp_path), "SCALEKIT_REDIS_URL": REDIS_URL,
                       "SCALEKIT_REDIS_KEY_PREFIX": prefix, "SCALEKIT_CDN_SURROGATE_KEYS": "fastly",
                       "SCALEKIT_CDN_PURGE": json.dumps({"settle_seconds": 0.02, "targets": {"fastly": target}})}
        try:
            result = CliRunner().invoke(main, ["invalidate", "--tag", "product:9"], env=environment)
            assert result.exit_code == 0, result.output
            assert "edge purge queued for fastly (sent by the fleet's app processes)" in result.output
            received = double.wait_for(lambda got: len(got) >= 1)
            assert app.runtime.services["cdn.purge"].wait_idle(10.0)
            status = CliRunner().invoke(main, ["purge", "status", "--json"], env=environment)
        finally:
            app.runtime.close()
    assert [r.json() for r in received] == [{"surrogate_keys": ["product:9"]}]
    assert status.exit_code == 0, status.output
    document = json.loads(status.output)
    assert document["targets"]["fastly"]["kind"] == "fastly"
    assert [(q["queue"], q["target"], q["length"]) for q in document["queues"]] == [("redis", "fastly", 0)]
    assert TOKEN not in status.output
