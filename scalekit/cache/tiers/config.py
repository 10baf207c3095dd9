"""Configuration of the cache tiers (L1 memory, L2 Redis, L3 disk) and fleet invalidation.

Each section is nested in ``CacheConfig`` (``cache.memory``, ``cache.l2``, ``cache.disk``,
``cache.invalidation``), so ``SCALEKIT_CACHE_MEMORY_MAX_BYTES=134217728`` or
``[cache.memory] max_bytes = 134217728`` in scalekit.toml set them.

>>> MemoryConfig(max_bytes=1024, max_entry_bytes=512).max_entry_bytes
512
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import require

__all__ = ["DiskConfig", "InvalidationConfig", "L2Config", "MemoryConfig"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """L1: the in-process LRU bounded in bytes."""

    enabled: bool = True
    max_bytes: int = 64 * MIB
    # One huge body must not evict everything else: larger entries skip L1 (L2/L3 may keep them).
    max_entry_bytes: int = 1 * MIB
    # How long an entry is kept past the end of its usable life (fresh + stale-while-revalidate /
    # stale-if-error), so the cache layer can still revalidate it with a conditional request.
    retain_stale_seconds: float = 30.0

    def __post_init__(self) -> None:
        require(self.max_bytes >= 0, "max_bytes", self.max_bytes, "zero or more bytes")
        require(0 < self.max_entry_bytes, "max_entry_bytes", self.max_entry_bytes,
                "a positive number of bytes")
        require(self.retain_stale_seconds >= 0, "retain_stale_seconds",
                self.retain_stale_seconds, "zero or more seconds")


@dataclass(frozen=True, slots=True)
class L2Config:
    """L2: Redis shared by the fleet (used once ``redis.url`` is set)."""

    enabled: bool = True
    max_entry_bytes: int = 8 * MIB
    # Bodies at least this large are zlib-compressed in Redis and on disk (0 = never).
    compress_min_bytes: int = 2048
    # HMAC-SHA256 key signing every entry in Redis and on disk, so whoever can write to Redis
    # cannot inject responses. Unset: unsigned (fine for a private Redis).
    signing_secret: str | None = None
    retain_stale_seconds: float = 30.0
    # Optional fleet-wide coalescing of misses: one instance holds a short lease per key.
    coalesce: bool = False
    lease_seconds: float = 5.0

    def __post_init__(self) -> None:
        require(self.max_entry_bytes > 0, "max_entry_bytes", self.max_entry_bytes,
                "a positive number of bytes")
        require(self.compress_min_bytes >= 0, "compress_min_bytes", self.compress_min_bytes,
                "zero (never) or more bytes")
        require(self.signing_secret is None or len(self.signing_secret) >= 16, "signing_secret",
                "<hidden>", "a secret of at least 16 characters")
        require(self.retain_stale_seconds >= 0, "retain_stale_seconds",
                self.retain_stale_seconds, "zero or more seconds")
        require(self.lease_seconds > 0, "lease_seconds", self.lease_seconds,
                "a positive number of seconds")


@dataclass(frozen=True, slots=True)
class DiskConfig:
    """L3: local disk bounded in bytes, under ``state_dir`` (or ``path``)."""

    enabled: bool = True
    # Directory of the disk tier; relative paths are under Config.state_dir. Processes of one
    # host that share it (gunicorn workers) share L3.
    path: str = "cache"
    max_bytes: int = 512 * MIB
    max_entry_bytes: int = 64 * MIB
    retain_stale_seconds: float = 300.0

    def __post_init__(self) -> None:
        require(bool(self.path), "path", self.path, "a directory path")
        require(self.max_bytes >= 0, "max_bytes", self.max_bytes, "zero or more bytes")
        require(self.max_entry_bytes > 0, "max_entry_bytes", self.max_entry_bytes,
                "a positive number of bytes")
        require(self.retain_stale_seconds >= 0, "retain_stale_seconds",
                self.retain_stale_seconds, "zero or more seconds")


@dataclass(frozen=True, slots=True)
class InvalidationConfig:
    """Tag generations, the pub/sub channel, and the protected purge endpoint."""

    enabled: bool = True
    # Name of the Redis invalidation log (prefixed by redis.key_prefix) the fleet follows.
    channel: str = "invalidations"
    # While this instance cannot hear the log, what it holds is served for at most this long
    # after the last answer from Redis; then every entry counts as not current (a miss).
    max_staleness_seconds: float = 3.0
    # How often the listener renews its lease and proves the log is heard when nothing happens.
    heartbeat_seconds: float = 0.5
    # How long invalidate() waits for every live instance to acknowledge applying an
    # invalidation (read-your-writes); the ones that have not are named in its result.
    ack_timeout_seconds: float = 0.05
    # HTTP purge endpoint: POST/PURGE {purge_path}?tag=T&tag=T2 with "Authorization: Bearer
    # {purge_token}". Without a token the endpoint does not exist.
    purge_path: str = "/_scalekit/purge"
    purge_token: str | None = None

    def __post_init__(self) -> None:
        require(bool(self.channel), "channel", self.channel, "a channel name")
        require(self.max_staleness_seconds > 0, "max_staleness_seconds",
                self.max_staleness_seconds, "a positive number of seconds")
        require(0 < self.heartbeat_seconds < self.max_staleness_seconds, "heartbeat_seconds",
                self.heartbeat_seconds, "a positive number of seconds below max_staleness_seconds")
        require(0 <= self.ack_timeout_seconds <= 10, "ack_timeout_seconds",
                self.ack_timeout_seconds, "between 0 (do not wait) and 10 seconds")
        require(self.purge_path.startswith("/"), "purge_path", self.purge_path,
                "a path starting with '/'")
        require(self.purge_token is None or len(self.purge_token) >= 16, "purge_token",
                "<hidden>", "a bearer token of at least 16 characters")
