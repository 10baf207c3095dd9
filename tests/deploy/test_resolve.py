"""The shipped edge follows the fleet's addresses: nginx looks the upstream name up again
(``resolve`` on the upstream server, with a resolver), so replicas that ``docker compose up -d
--build`` replaces (new containers, new addresses) or ``--scale`` adds get traffic without an
nginx reload, and a replaced one gets none.

A DNS server of the test's own answers ``app`` (the compose service name) with addresses on
127.0.0.0/8; the shipped config runs with only its addresses adapted (the resolver's, the
upstream port) and lookups every second instead of every ten. Requests go to the server that
balances over the fleet (the one Varnish fetches from). Needs nginx 1.27.3 or newer:
tests/deploy/fetch_nginx.sh fetches one where the machine's is older.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from tests.servers import free_port

from .conftest import make_static_root, require_binary
from .harness import AppInstance, render_nginx_config, run_nginx

pytestmark = [pytest.mark.nginx, pytest.mark.server, pytest.mark.slow]

DEADLINE_SECONDS = 30.0


class FleetDNS(BaseResolver):  # type: ignore[misc]
    """Answers ``app`` with the addresses the test sets (TTL 1 s), anything else NXDOMAIN."""

    def __init__(self, addresses: list[str]) -> None:
        self.lock = threading.Lock()
        self.addresses = list(addresses)
        self.questions = 0

    def set(self, addresses: list[str]) -> None:
        with self.lock:
            self.addresses = list(addresses)

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        with self.lock:
            self.questions += 1
            addresses = list(self.addresses)
        if name != "app":
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dns_server(resolver: FleetDNS) -> Iterator[int]:
    port = free_udp_port()
    server = DNSServer(resolver, port=port, address="127.0.0.1",
                       logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    server.start_thread()
    try:
        yield port
    finally:
        server.stop()
        server.server.server_close()   # the socketserver under it: stop() leaves its socket open


def answered(url: str, count: int = 8) -> list[tuple[int, str]]:
    """(status, instance) of ``count`` sequential requests through nginx."""
    results = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            response = client.get(url + "/whoami")
            results.append((response.status_code,
                            response.json()["instance"] if response.status_code == 200 else ""))
    return results


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"nginx did not follow DNS within {DEADLINE_SECONDS} s: {what}")


def test_nginx_follows_the_fleets_addresses_without_a_reload(tmp_path: Path) -> None:
    binary = require_binary("nginx-resolve")
    port = free_port()
    old = AppInstance("old", tmp_path, address="127.0.0.5", port=port)
    new = AppInstance("new", tmp_path, address="127.0.0.6", port=port)
    fleet_dns = FleetDNS(["127.0.0.5"])
    try:
        for instance in (old, new):
            instance.spawn()
        for instance in (old, new):
            instance.wait_ready()
        with dns_server(fleet_dns) as dns_port:
            listen, balancer = free_port(), free_port()
            config = render_nginx_config(tmp_path / "nginx", listen_port=listen,
                                         static_root=make_static_root(tmp_path),
                                         resolver=f"127.0.0.1:{dns_port}", upstream_port=port,
                                         fleet_port=balancer)
            with run_nginx(binary, config, listen):
                url = f"http://127.0.0.1:{balancer}"
                # The upstream has no server until nginx's first lookup of "app" is answered
                # (at start-up, in the background): a request before it gets a 502.
                wait_for(lambda: set(answered(url)) == {(200, "old")}, "the first lookup")
                # docker compose up --scale app=2: DNS answers both; nginx spreads over both.
                fleet_dns.set(["127.0.0.5", "127.0.0.6"])
                wait_for(lambda: {name for _, name in answered(url)} == {"old", "new"}, "a replica added")
                # docker compose up -d --build: the old container is gone, its successor has
                # another address. Every request reaches the new one, none fails.
                fleet_dns.set(["127.0.0.6"])
                old.stop()
                wait_for(lambda: set(answered(url)) == {(200, "new")}, "a replica replaced")
                assert set(answered(url, 20)) == {(200, "new")}
        assert fleet_dns.questions >= 3   # looked up again and again, not once at start-up
    finally:
        old.stop()
        new.stop()
