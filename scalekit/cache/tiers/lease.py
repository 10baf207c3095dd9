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

import asyncio
import secrets
import time
from dataclasses import dataclass

from .redis import RedisConnections, entry_key

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
        token = secrets.token_hex(8)
        if not self.connections.breaker.allow():
            return Lease(key, token, shared=False)
        try:
            won = self.connections.sync().set(self._lease_key(key), token, nx=True,
                                              px=int(self.lease_seconds * 1000))
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self.connections.breaker.failure(error)
            return Lease(key, token, shared=False)
        self.connections.breaker.success()
        return Lease(key, token, shared=True) if won else None

    def release(self, lease: Lease) -> None:
        """Give the lease back (no-op for an unshared one or one that already expired)."""
        if not lease.shared or not self.connections.breaker.allow():
            return
        try:
            self.connections.sync().eval(_RELEASE, 1, self._lease_key(lease.key), lease.token)
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self.connections.breaker.failure(error)  # it expires by itself

    def is_held(self, key: str) -> bool:
        """Whether some instance holds ``key``'s lease (False when Redis cannot say)."""
        if not self.connections.breaker.allow():
            return False
        try:
            return bool(self.connections.sync().exists(self._lease_key(key)))
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self.connections.breaker.failure(error)
            return False

    def wait_release(self, key: str, *, timeout_seconds: float) -> bool:
        """Wait until ``key``'s lease is released or expired; False on timeout."""
        deadline = time.monotonic() + timeout_seconds
        while self.is_held(key):
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_seconds)
        return True

    # ----------------------------------------------------------------- async twins
    async def aacquire(self, key: str) -> Lease | None:
        token = secrets.token_hex(8)
        if not self.connections.breaker.allow():
            return Lease(key, token, shared=False)
        try:
            won = await self.connections.async_client().set(
                self._lease_key(key), token, nx=True, px=int(self.lease_seconds * 1000))
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self.connections.breaker.failure(error)
            return Lease(key, token, shared=False)
        self.connections.breaker.success()
        return Lease(key, token, shared=True) if won else None

    async def arelease(self, lease: Lease) -> None:
        if not lease.shared or not self.connections.breaker.allow():
            return
        try:
            await self.connections.async_client().eval(
                _RELEASE, 1, self._lease_key(lease.key), lease.token)
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self.connections.breaker.failure(error)

    async def ais_held(self, key: str) -> bool:
        if not self.connections.breaker.allow():
            return False
        try:
            return bool(await self.connections.async_client().exists(self._lease_key(key)))
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self.connections.breaker.failure(error)
            return False

    async def await_release(self, key: str, *, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while await self.ais_held(key):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll_seconds)
        return True
