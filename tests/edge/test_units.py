"""The pure parts of edge purges: configuration checks name the key, replies are judged by
their status and headers, vendors batch within their limits and encode tags as emitted, and
the modules' own examples hold."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path
from typing import Any

import pytest

from scalekit.cdn.purge.calls import Accepted, Rejected, Reply, Retry, batches, judge
from scalekit.cdn.purge.config import PurgeTargetConfig
from scalekit.cdn.purge.vendors import VarnishVendor
from scalekit.config import load_config
from scalekit.errors import ConfigError


def _config(target: dict[str, Any], dialect: str | None = None) -> Any:
    dialect = dialect or target.get("kind", "none")
    return load_config({"cdn": {"surrogate_keys": dialect, "purge": {"targets": {"edge": target}}}},
                       environ={}, cwd="/nonexistent")


@pytest.mark.parametrize(("target", "dialect", "key"), [
    pytest.param({"kind": "squid"}, "none", "cdn.purge.targets.edge.kind", id="unknown kind"),
    pytest.param({"kind": "varnish"}, None, "cdn.purge.targets.edge.urls", id="varnish without urls"),
    pytest.param({"kind": "varnish", "urls": ["https://varnish:6091"]}, None,
                 "cdn.purge.targets.edge.urls", id="varnish over https"),
    pytest.param({"kind": "fastly", "token": "t" * 20}, None, "cdn.purge.targets.edge.service_id",
                 id="fastly without service"),
    pytest.param({"kind": "fastly", "service_id": "s"}, None, "cdn.purge.targets.edge.token",
                 id="fastly without token"),
    pytest.param({"kind": "fastly", "service_id": "s", "token": "a", "token_file": "/x"}, None,
                 "cdn.purge.targets.edge.token_file", id="token given twice"),
    pytest.param({"kind": "fastly", "service_id": "s", "token_file": "/nonexistent/token"}, None,
                 "cdn.purge.targets.edge.token_file", id="unreadable token file"),
    pytest.param({"kind": "cloudflare", "zone_id": "z", "token": "t", "soft": True}, None,
                 "cdn.purge.targets.edge.soft", id="no soft purge at cloudflare"),
    pytest.param({"kind": "akamai", "host": "h", "client_token": "c", "access_token": "a"}, None,
                 "cdn.purge.targets.edge.client_secret", id="akamai credential missing"),
    pytest.param({"kind": "akamai", "edgerc": "/nonexistent/.edgerc"}, None,
                 "cdn.purge.targets.edge.edgerc", id="unreadable edgerc"),
    pytest.param({"kind": "varnish", "urls": ["http://v:6091"]}, "fastly", "cdn.surrogate_keys",
                 id="the edge would not get the tags it is asked to purge"),
    pytest.param({"kind": "fastly", "service_id": "s", "token": "t", "max_items_per_call": 0}, None,
                 "cdn.purge.targets.edge.max_items_per_call", id="no items per call"),
])
def test_bad_targets_fail_at_start_up_naming_the_key(target: dict[str, Any], dialect: str | None,
                                                     key: str) -> None:
    with pytest.raises(ConfigError) as error:
        _config(target, dialect)
    assert error.value.key == key, str(error.value)


def test_targets_from_the_environment_and_an_edgerc_file(tmp_path: Path) -> None:
    edgerc = tmp_path / ".edgerc"
    edgerc.write_text("[ccu]\nhost = akab-h.purge.akamaiapis.net\nclient_token = ct\n"
                      "client_secret = cs\naccess_token = at\n")
    config = load_config(environ={
        "SCALEKIT_CDN_SURROGATE_KEYS": "akamai",
        "SCALEKIT_CDN_PURGE_TARGETS_MY_EDGE_KIND": "akamai",
        "SCALEKIT_CDN_PURGE_TARGETS_MY_EDGE_EDGERC": str(edgerc),
        "SCALEKIT_CDN_PURGE_TARGETS_MY_EDGE_EDGERC_SECTION": "ccu",
    }, cwd="/nonexistent")
    target = config.cdn.purge.targets["my_edge"]
    assert target.akamai_credentials()["host"] == "akab-h.purge.akamaiapis.net"
    assert set(target.secrets()) == {"ct", "cs", "at"}
    assert "cs" not in repr(target)


@pytest.mark.parametrize(("reply", "outcome"), [
    pytest.param(Reply(201, {}, b'{"httpStatus": 201}'), Accepted(), id="Akamai's 201"),
    pytest.param(Reply(200, {}, b'{"success": false, "errors": []}'), Rejected("HTTP 200: "
                 '{"success": false, "errors": []}'), id="Cloudflare's success false"),
    pytest.param(Reply(429, {}, b""), Retry("HTTP 429", 5.0), id="429 without a wait: 5 s"),
    pytest.param(Reply(429, {"fastly-ratelimit-reset": "1030"}, b""), Retry("HTTP 429", 30.0),
                 id="Fastly's reset time"),
    pytest.param(Reply(503, {"retry-after": "2"}, b""), Retry("HTTP 503", 2.0), id="503 with a wait"),
    pytest.param(Reply(502, {}, b""), Retry("HTTP 502"), id="502: backoff"),
    pytest.param(Reply(403, {}, b"no"), Retry("HTTP 403: no", slow=True), id="403: slow retries"),
    pytest.param(Reply(413, {}, b""), Rejected("HTTP 413"), id="413: never again as it is"),
])
def test_replies_are_judged_by_status_and_headers(reply: Reply, outcome: object) -> None:
    assert judge(reply, now=1000.0) == outcome


def test_batches_respect_count_and_bytes() -> None:
    assert batches(["a"] * 5, max_count=2) == [["a", "a"], ["a", "a"], ["a"]]
    assert batches(["x" * 10, "y"], max_count=5, max_bytes=5) == [["x" * 10], ["y"]]


def test_varnish_purges_every_address_within_one_header_line() -> None:
    target = PurgeTargetConfig(kind="varnish", urls=("http://varnish:6091",))
    vendor = VarnishVendor(target, resolve=lambda host, port: ["10.0.0.1", "10.0.0.2"])
    tags = [f"tag-{number:05d}-" + "k" * 40 for number in range(400)]  # ~20 KB of keys
    calls = vendor.tag_calls(tags)
    assert {call.connect_to for call in calls} == {"10.0.0.1", "10.0.0.2"}
    lines = [dict(call.headers)["xkey-purge"] for call in calls if call.connect_to == "10.0.0.1"]
    assert all(len(line) <= 8000 for line in lines) and len(lines) == 3
    assert sorted(key for line in lines for key in line.split()) == sorted(tags)
    (url_call, _) = vendor.url_calls(["https://shop.example/p?a=1"])
    assert (url_call.method, url_call.url, dict(url_call.headers)) == (
        "PURGE", "http://varnish:6091/p?a=1", {"host": "shop.example", "x-forwarded-proto": "https"})
    assert "token" not in repr(url_call)
    soft = VarnishVendor(PurgeTargetConfig(kind="varnish", urls=("http://varnish:6091",), soft=True),
                         resolve=lambda host, port: ["10.0.0.1"])
    assert [dict(call.headers) for call in soft.tag_calls(["a", "b"])] == [{"xkey-softpurge": "a b"}]


@pytest.mark.parametrize("module", ["calls", "config", "edgegrid", "service", "worker"])
def test_module_examples(module: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(f"scalekit.cdn.purge.{module}"))
    assert failures == 0


def test_the_host_queue_hands_a_lost_job_back_after_the_reclaim_time(tmp_path: Path) -> None:
    """A consumer whose loop restarted after a fault no longer holds what it took: once the
    job's claim is older than the reclaim time, it is taken again (by any process, this one
    included), so a host with a single app process loses nothing either."""
    from scalekit.cdn.purge.localqueue import LocalJobSource, LocalPurgeQueue

    now = [1000.0]
    queue = LocalPurgeQueue(tmp_path / "edge-purges.sqlite3")
    queue.enqueue({"edge": ["t:a"]}, source="test", now=now[0], due=now[0])
    source = LocalJobSource(queue, "edge", consumer="only", reclaim_after_seconds=30.0,
                            clock=lambda: now[0])
    (job,) = source.take(block_seconds=0.0, count=10)
    assert source.take(block_seconds=0.0, count=10) == [] and source.reclaim(count=10) == []
    now[0] += 31.0
    assert [again.id for again in source.reclaim(count=10)] == [job.id]
    source.done([job])
    assert queue.status(["edge"], now=now[0])[0].length == 0
    queue.close()
