"""Optional fleet-wide coalescing of misses: a short Redis lease per cache key.

The cache layer already coalesces concurrent misses inside one process. With
``cache.l2.coalesce = true`` it can also ask :class:`Leases` before calling the origin:

* ``acquire(key)`` -> a :class:`Lease` token: this instance computes the response, then calls
  ``release(lease)`` (also on errors). The lease expires by itself after ``lease_seconds``, so a
  holder that died never blocks anyone for longer.
* ``None`` -> another instance is computing it: serve a stale entry if there is one, otherwise
  ``wait(key, timeout)`` until the holder releases (then look the key up in the store again), or
  go to the origin when the wait times out.
* Redis down (breaker open or a fault): ``acquire`` returns an *unshared* lease, i.e. "compute
  it yourself" — coalescing is an optimisation and never blocks a request.

Release is a compare-and-delete script on the lease's one key (Cluster-safe): a holder whose
lease already expired cannot delete a newer holder's lease.

Layer usage (sync; the async twins are ``aacquire``/``arelease``/``await_release``)::

    lease = leases.acquire(key)
    if lease is None:
        if stale is not None: serve stale
        leases.wait_release(key, timeout_seconds=leases.lease_seconds); found = store.get(key) ...
    try: response = call_origin()
    finally: leases.release(lease)
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from .plans import Pause, Plan, arun, run
from .redis import UNANSWERED, RedisConnections, entry_key

__all__ = ["Lease", "Leases"]

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to compute one key's response; ``shared`` False when Redis was not asked."""

    key: str
    token: str
    shared: bool


class Leases:
    """Short per-key leases in Redis; every fault means "compute it yourself"."""

    def __init__(self, connections: RedisConnections, *, lease_seconds: float = 5.0,
                 poll_seconds: float = 0.01) -> None:
        self.connections = connections
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._release_script = None

    def _lease_key(self, key: str) -> str:
        return entry_key(self.connections.prefix + "lease:", key)

    def acquire(self, key: str) -> Lease | None:
        """A lease on ``key``, or None if another live instance holds it."""
        return run(self._acquire(key))

    async def aacquire(self, key: str) -> Lease | None:
        return await arun(self._acquire(key))

    def release(self, lease: Lease) -> None:
        """Give the lease back (no-op for an unshared one or one that already expired)."""
        run(self._release(lease))

    async def arelease(self, lease: Lease) -> None:
        await arun(self._release(lease))

    def is_held(self, key: str) -> bool:
        """Whether some instance holds ``key``'s lease (False when Redis cannot say)."""
        return run(self._is_held(key))

    async def ais_held(self, key: str) -> bool:
        return await arun(self._is_held(key))

    def wait_release(self, key: str, *, timeout_seconds: float) -> bool:
        """Wait until ``key``'s lease is released or expired; False on timeout."""
        return run(self._wait_release(key, timeout_seconds))

    async def await_release(self, key: str, *, timeout_seconds: float) -> bool:
        return await arun(self._wait_release(key, timeout_seconds))

    # ----------------------------------------------------------------- plans
    def _ask(self, name: str, *args: Any, **options: Any) -> Plan[Any]:
        # A release that failed expires by itself; any fault means "compute it yourself".
        return self.connections.ask(self.connections.command(name, *args, **options))

    def _acquire(self, key: str) -> Plan[Lease | None]:
        token = secrets.token_hex(8)
        won = yield from self._ask("set", self._lease_key(key), token, nx=True,
                                   px=int(self.lease_seconds * 1000))
        if won is UNANSWERED:
            return Lease(key, token, shared=False)
        return Lease(key, token, shared=True) if won else None

    def _release(self, lease: Lease) -> Plan[None]:
        if lease.shared:
            yield from self._ask("eval", _RELEASE, 1, self._lease_key(lease.key), lease.token)

    def _is_held(self, key: str) -> Plan[bool]:
        held = yield from self._ask("exists", self._lease_key(key))
        return held is not UNANSWERED and bool(held)

    def _wait_release(self, key: str, timeout_seconds: float) -> Plan[bool]:
        deadline = time.monotonic() + timeout_seconds
        while (yield from self._is_held(key)):
            if time.monotonic() >= deadline:
                return False
            yield Pause(self.poll_seconds)
        return True
