"""The fleet's purge queue: one Redis stream per target, read by one consumer group.

Keys share the hash tag ``{<queue>}`` (Redis Cluster: one slot, so the scripts may touch them
together): ``<prefix>{<queue>}:q:<target>`` is the stream, ``...:w:<target>`` the hash of
waiting items (item -> id of the job that will send it), ``...:f`` the targets' last failures.

- Queuing is one script: for each target, the items not already waiting become one stream
  entry (``XADD``) and are marked waiting. It runs before ``scalekit.invalidate()`` returns.
- Every app process runs a consumer per target in the group ``purgers``: ``XREADGROUP``
  hands each entry to one consumer; the consumer releases the entry's waiting marks (a
  script: only marks still naming that entry), sends, then ``XACK`` + ``XDEL``.
- A consumer that dies leaves its entries pending; every consumer runs ``XAUTOCLAIM`` for
  entries idle longer than ``reclaim_after_seconds`` and takes them over. A consumer holding
  an entry for a retry later renews it (``XCLAIM ... JUSTID``), so it is not taken meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .jobs import Job, TargetStatus

__all__ = ["GROUP", "RedisJobSource", "RedisPurgeQueue", "consumer_name"]

log = logging.getLogger("scalekit.cdn")

GROUP = "purgers"

_ENQUEUE = """
local source, wall, due = ARGV[1], ARGV[2], ARGV[3]
local pos, added = 4, 0
for k = 1, #KEYS, 2 do
  local n = tonumber(ARGV[pos]); pos = pos + 1
  local fresh = {}
  for i = pos, pos + n - 1 do
    if redis.call('HEXISTS', KEYS[k + 1], ARGV[i]) == 0 then fresh[#fresh + 1] = ARGV[i] end
  end
  pos = pos + n
  if #fresh > 0 then
    local id = redis.call('XADD', KEYS[k], '*', 's', source, 'w', wall, 'd', due,
                          'i', cjson.encode(fresh))
    for _, item in ipairs(fresh) do redis.call('HSET', KEYS[k + 1], item, id) end
    added = added + 1
  end
end
return added
"""
# Release the waiting marks of entry ARGV[1] (only those still naming it).
_RELEASE = """
local released = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i]); released = released + 1
  end
end
return released
"""

# Drop consumers of group ARGV[1] other than ARGV[2] that hold nothing and were idle longer
# than ARGV[3] ms (XINFO and DELCONSUMER atomically: nothing is taken in between).
_FORGET = """
local forgotten = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['name'] ~= ARGV[2] and tonumber(field['pending']) == 0
      and tonumber(field['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    forgotten = forgotten + 1
  end
end
return forgotten
"""


def consumer_name() -> str:
    """This process's consumer name: host, pid and a random part (a restarted pid differs)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisPurgeQueue:
    """The producer's side and the status of the purge streams of one fleet."""

    def __init__(self, connections: Any, *, queue: str, targets: Sequence[str]) -> None:
        self.connections = connections
        base = f"{connections.prefix}{{{queue}}}"
        self.streams = {target: f"{base}:q:{target}" for target in targets}
        self.waiting = {target: f"{base}:w:{target}" for target in targets}
        self.failures_key = f"{base}:f"

    def _keys_and_args(self, items_by_target: Mapping[str, Sequence[str]], *, source: str,
                       now: float, due: float) -> tuple[list[str], list[str]]:
        keys: list[str] = []
        args = [source, repr(now), repr(due)]
        for target, items in items_by_target.items():
            if items:
                keys += [self.streams[target], self.waiting[target]]
                args += [str(len(items)), *items]
        return keys, args

    def enqueue(self, client: Any, items_by_target: Mapping[str, Sequence[str]], *,
                source: str, now: float, due: float) -> int:
        """Queue the items (sync client); the number of stream entries added."""
        keys, args = self._keys_and_args(items_by_target, source=source, now=now, due=due)
        if not keys:
            return 0
        return int(client.eval(_ENQUEUE, len(keys), *keys, *args))

    async def aenqueue(self, client: Any, items_by_target: Mapping[str, Sequence[str]], *,
                       source: str, now: float, due: float) -> int:
        """:meth:`enqueue` with an asyncio client."""
        keys, args = self._keys_and_args(items_by_target, source=source, now=now, due=due)
        if not keys:
            return 0
        return int(await client.eval(_ENQUEUE, len(keys), *keys, *args))

    def status(self, client: Any, *, now: float) -> list[TargetStatus]:
        """Length, pending entries, consumers, oldest entry's age and last failure per target."""
        failures = {_text(name): _text(value) for name, value in client.hgetall(self.failures_key).items()}
        redis_now = _redis_time(client, now)
        out = []
        for target, stream in self.streams.items():
            length = int(client.xlen(stream))
            pending, consumers = 0, 0
            if length:
                try:
                    summary = client.xpending(stream, GROUP)
                    pending = int(summary.get("pending") or 0)
                    groups = client.xinfo_groups(stream)
                    consumers = sum(int(group.get("consumers") or 0) for group in groups
                                    if _text(group.get("name")) == GROUP)
                except Exception as error:  # no group yet: nobody consumes
                    if "NOGROUP" not in str(error):
                        raise
            oldest = None
            first = client.xrange(stream, count=1)
            if first:
                oldest = max(0.0, redis_now - int(_text(first[0][0]).split("-")[0]) / 1000)
            failure = json.loads(failures[target]) if target in failures else {}
            out.append(TargetStatus(queue="redis", target=target, length=length, pending=pending,
                                    consumers=consumers, oldest_age_seconds=oldest,
                                    last_failure=failure))
        return out


class RedisJobSource:
    """One consumer of one target's stream (its own client: reads block)."""

    name = "redis"

    def __init__(self, queue: RedisPurgeQueue, target: str, client: Any, *, consumer: str,
                 reclaim_after_seconds: float) -> None:
        self.client = client
        self.target = target
        self.stream = queue.streams[target]
        self.waiting = queue.waiting[target]
        self.failures_key = queue.failures_key
        self.consumer = consumer
        self.reclaim_after_ms = int(reclaim_after_seconds * 1000)
        self._group_ready = False
        self._release = client.register_script(_RELEASE)
        self._forget = client.register_script(_FORGET)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the stream's start: entries queued before any consumer existed are sent.
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except Exception as error:  # redis.ResponseError BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def take(self, *, block_seconds: float, count: int) -> list[Job]:
        self._ensure_group()
        try:
            reply = self.client.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=count,
                                           block=max(1, int(block_seconds * 1000)))
        except Exception as error:  # the stream was deleted (FLUSHALL, a Redis restart)
            if "NOGROUP" in str(error):
                self._group_ready = False
            raise
        jobs = []
        for _, entries in reply or ():
            jobs.extend(self._jobs(entries))
        return jobs

    def reclaim(self, *, count: int) -> list[Job]:
        self._ensure_group()
        reply = self.client.xautoclaim(self.stream, GROUP, self.consumer,
                                       min_idle_time=self.reclaim_after_ms, start_id="0-0", count=count)
        self._forget_dead_consumers()
        return self._jobs(reply[1])

    def _forget_dead_consumers(self) -> None:
        """Drop consumers idle for ten reclaim periods that hold nothing (restarted processes
        leave their names behind). In one script, so a consumer that takes an entry meanwhile
        is never dropped with it; a live one dropped while idle is made again by its next read."""
        self._forget(keys=[self.stream], args=[GROUP, self.consumer, 10 * self.reclaim_after_ms])

    def release(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._release(keys=[self.waiting], args=[job.id, *job.items])

    def touch(self, jobs: Sequence[Job]) -> None:
        if jobs:
            self.client.xclaim(self.stream, GROUP, self.consumer, min_idle_time=0,
                               message_ids=[job.id for job in jobs], justid=True)

    def done(self, jobs: Sequence[Job]) -> None:
        if jobs:
            ids = [job.id for job in jobs]
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.stream, GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            pipe.execute()

    def record_failure(self, reason: str | None, *, now: float) -> None:
        if reason is None:
            self.client.hdel(self.failures_key, self.target)
            return
        previous = self.client.hget(self.failures_key, self.target)
        count = 1
        if previous:
            try:
                count = int(json.loads(previous).get("count", 0)) + 1
            except (ValueError, AttributeError):
                count = 1
        self.client.hset(self.failures_key, self.target,
                         json.dumps({"at": now, "reason": reason, "count": count}))

    def _jobs(self, entries: Any) -> list[Job]:
        jobs = []
        for entry_id, fields in entries or ():
            if not fields:  # deleted meanwhile
                continue
            data = {_text(name): _text(value) for name, value in fields.items()}
            try:
                items = tuple(str(item) for item in json.loads(data["i"]))
                job = Job(target=self.target, id=_text(entry_id), items=items,
                          source=data.get("s", ""), enqueued_at=float(data["w"]),
                          due_at=float(data.get("d", data["w"])))
            except (KeyError, ValueError, TypeError):
                log.warning("dropped a malformed purge entry %s on %s", _text(entry_id), self.stream)
                self.done([Job(target=self.target, id=_text(entry_id), items=(), source="",
                               enqueued_at=0.0, due_at=0.0)])
                continue
            jobs.append(job)
        return jobs

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a broken client must not raise
            log.debug("closing a purge consumer's Redis client failed", exc_info=True)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _redis_time(client: Any, fallback: float) -> float:
    try:
        seconds, microseconds = client.time()
        return float(seconds) + float(microseconds) / 1e6
    except Exception:  # noqa: BLE001 - TIME may be forbidden (managed Redis): the local clock will do
        return fallback
