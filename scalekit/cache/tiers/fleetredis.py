"""The invalidation log's Redis side: key layout and the scripts every instance runs.

Four keys under one hash tag (``{<key_prefix><channel>}``), so every script is Redis Cluster
safe: ``state`` (hash: ``m:seq`` the fleet's sequence, ``m:epoch`` the state's random name,
``m:born`` when it was created and ``m:recovered`` whether an instance then followed an older
one; ``t:<tag>`` each tag's latest sequence), ``log`` (stream, id ``<sequence>-0``, fields
``p`` previous sequence, ``g`` JSON list of tags, ``t`` sender's wall clock, ``o`` sender),
``acks`` (sorted set: member -> last sequence applied) and ``leases`` (sorted set:
member -> expiry in Redis's own milliseconds; expired members are pruned by the joins and the
writers' checks). A *member* is ``<instance>@<epoch>``: an acknowledgement sent for one state
can never count in another (a plain ``ZADD XX`` then needs no script to be honest).

A poll is the instance's one recurring cost, paid by every instance for every invalidation, so
it runs no script: ``ZADD acks XX`` (acknowledge), ``HMGET state`` (epoch and head), ``XREAD
BLOCK``, pipelined in one round trip. The lease is renewed (a script: it needs Redis's clock)
only by a poll that asks for it, about once per heartbeat (see :class:`~.fleetlog.Follower`).

Every script that finds no epoch creates a new state (and drops the log and members of the
lost one), so a Redis that restarted empty or evicted the state is noticed by the epoch.
Each operation of :class:`FleetScripts` is written once, as a *plan*: a generator that yields
the Redis calls to make and receives their answers. :func:`run` performs a plan on a sync
client, :func:`arun` on an asyncio one (same plan, same replies), so the request paths of WSGI
and ASGI, the listener thread and the bench's asyncio instances share every line of it.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio.cluster
import redis.cluster

from .fleetlog import LogEntry, parse_entry
from .plans import InThread, Pause, Plan, arun, run

__all__ = ["AckReport", "FleetKeys", "FleetScripts", "InThread", "Pause", "Plan", "Polled", "Recorded",
           "arun", "log_client", "member", "run"]

LOG_LENGTH = 10_000  # entries kept (approximately); a follower further behind resyncs
LOG_BATCH = 1_000  # entries read per poll
# A writer asks whether everyone applied its invalidation after this long, then twice as long
# each time up to the maximum: most acknowledgements take about a millisecond on loopback.
FIRST_ACK_POLL_SECONDS = 0.0005
MAX_ACK_POLL_SECONDS = 0.008

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function prune(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, name in ipairs(gone) do
    redis.call('ZREM', KEYS[4], name)
    redis.call('ZREM', KEYS[3], name)
  end
end
local function member(instance, epoch)
  return instance .. '@' .. epoch
end
local function ensure_state(now, candidate, recovering)
  local epoch = redis.call('HGET', KEYS[1], 'm:epoch')
  if epoch then return epoch end
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'm:epoch', candidate, 'm:born', now, 'm:seq', 0,
             'm:recovered', recovering)
  return candidate
end
local function recovered_age(now)
  -- ms since the state was recreated after Redis lost it, or -1 if it never was
  if redis.call('HGET', KEYS[1], 'm:recovered') ~= '1' then return -1 end
  return now - tonumber(redis.call('HGET', KEYS[1], 'm:born') or '0')
end
local function unacked_count(sequence, asking)
  -- live instances but asking that have not applied sequence (O(log N)); prune() first
  local missing = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. sequence)
  local own = redis.call('ZSCORE', KEYS[3], asking)
  if own and tonumber(own) < tonumber(sequence) then missing = missing - 1 end
  return missing
end
"""

# ARGV: origin, sent wall clock, floor, epoch candidate, log length, tags...
_INVALIDATE = _PRELUDE + """
local now = now_ms()
local epoch = ensure_state(now, ARGV[4], 1)
local previous = tonumber(redis.call('HGET', KEYS[1], 'm:seq') or '0')
local sequence = math.max(previous, tonumber(ARGV[3])) + 1
redis.call('HSET', KEYS[1], 'm:seq', sequence)
local tags = {}
for i = 6, #ARGV do
  redis.call('HSET', KEYS[1], 't:' .. ARGV[i], sequence)
  tags[#tags + 1] = ARGV[i]
end
local encoded = '[]'
if #tags > 0 then encoded = cjson.encode(tags) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], sequence .. '-0', 'p', previous,
           'g', encoded, 't', ARGV[2], 'o', ARGV[1])
-- The writer's first acknowledgement count, in the same round trip: nobody has applied the new
-- sequence yet, so this says how many others it must wait for (none: it is alone).
prune(now)
return {sequence, epoch, recovered_age(now), unacked_count(sequence, member(ARGV[1], epoch))}
"""

# ARGV: floor, epoch candidate, recovering (0/1), instance, lease ms, log length
_RESYNC = _PRELUDE + """
local now = now_ms()
local epoch = ensure_state(now, ARGV[2], ARGV[3])
local sequence = tonumber(redis.call('HGET', KEYS[1], 'm:seq') or '0')
local floor = tonumber(ARGV[1])
if sequence < floor then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], floor .. '-0', 'p', sequence,
             'g', '[]', 't', '', 'o', ARGV[4])
  redis.call('HSET', KEYS[1], 'm:seq', floor)
  sequence = floor
end
prune(now)
redis.call('ZADD', KEYS[3], 0, member(ARGV[4], epoch))
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), member(ARGV[4], epoch))
return {epoch, sequence}
"""

# ARGV: epoch, instance, applied sequence, lease ms. The state's sequence now (the log must
# reach it); -1: the epoch is not ours (resync). Expired members are pruned by the writers'
# checks and by joins, not here. Only a renewing poll runs it (about once per heartbeat); the
# others acknowledge with a plain ZADD XX.
_HEARTBEAT = _PRELUDE + """
if redis.call('HGET', KEYS[1], 'm:epoch') ~= ARGV[1] then return -1 end
local now = now_ms()
redis.call('ZADD', KEYS[3], ARGV[3], member(ARGV[2], ARGV[1]))
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), member(ARGV[2], ARGV[1]))
return tonumber(redis.call('HGET', KEYS[1], 'm:seq') or '0')
"""

# ARGV: sequence, asking instance, epoch, names (1) or a count (0). Returns {state age ms or -1
# (not recovered), names of live instances that have not applied the sequence...} or {age,
# how many}; {-2}: another epoch. A writer counts while it waits (O(log N), whatever the fleet's
# size) and asks for the names once, if someone is still missing when it stops waiting.
_ACKED = _PRELUDE + """
if redis.call('HGET', KEYS[1], 'm:epoch') ~= ARGV[3] then return {-2} end
local now = now_ms()
prune(now)
local out = {recovered_age(now)}
local asking = member(ARGV[2], ARGV[3])
if ARGV[4] == '0' then
  out[2] = unacked_count(ARGV[1], asking)
  return out
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])) do
  if name ~= asking then out[#out + 1] = name end
end
return out
"""

# ARGV: instance, epoch. Leave the members (a clean shutdown is not waited for).
_LEAVE = _PRELUDE + """
redis.call('ZREM', KEYS[3], member(ARGV[1], ARGV[2]))
redis.call('ZREM', KEYS[4], member(ARGV[1], ARGV[2]))
return 1
"""


@dataclass(frozen=True, slots=True)
class FleetKeys:
    """The four keys of one log (see the module docstring)."""

    state: str
    log: str
    acks: str
    leases: str

    @classmethod
    def of(cls, prefix: str, channel: str) -> FleetKeys:
        tag = "{" + prefix + channel + "}"
        return cls(state=f"{tag}:state", log=f"{tag}:log", acks=f"{tag}:acks",
                   leases=f"{tag}:leases")

    @property
    def all(self) -> list[str]:
        return [self.state, self.log, self.acks, self.leases]


@dataclass(frozen=True, slots=True)
class Polled:
    """A poll's answer: the state's sequence at the lease renewal (None: another epoch), the
    entries read after it, whether they were all there were, whether one was malformed."""

    head: int | None
    entries: list[LogEntry]
    complete: bool
    malformed: bool


def _polled(head: int, reply: Any, log: str) -> Polled:
    if head < 0:
        return Polled(None, [], True, False)
    return Polled(head, *_entries(reply, log))


@dataclass(frozen=True, slots=True)
class AckReport:
    """Who had not applied a sequence: ``lost`` if the state changed meanwhile; ``age_seconds``
    of a state recreated after a loss (members may still be rejoining), else None."""

    missing: tuple[str, ...]
    lost: bool = False
    recovered_age_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """An invalidation in the log: its ``sequence``, the state's ``epoch``, and the writer's
    first acknowledgement count, taken in the same script (``unacked``: how many other live
    instances had not applied it, with the report :meth:`FleetScripts.unacked_count` gives)."""

    sequence: int
    epoch: str
    unacked: tuple[int, AckReport]


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def member(instance: str, epoch: str) -> str:
    """How ``instance`` appears in the acknowledgements and leases of the state ``epoch``."""
    return f"{instance}@{epoch}"


def _ack_report(reply: list[Any]) -> AckReport:
    age = int(reply[0])
    if age == -2:
        return AckReport(missing=(), lost=True)
    return AckReport(missing=tuple(_text(name).rpartition("@")[0] for name in reply[1:]),
                     recovered_age_seconds=None if age < 0 else age / 1000.0)


def _entries(reply: Any, log: str) -> tuple[list[LogEntry], bool, bool]:
    """(entries, complete, malformed) from an XREAD reply (RESP2: [[name, entries]]; RESP3: a
    dict of name -> [entries])."""
    if not reply:
        return [], True, False
    if isinstance(reply, dict):
        items: Any = next(iter(reply.values()), [])
        if len(items) == 1 and isinstance(items[0], list):
            items = items[0]
    else:
        items = reply[0][1]
    entries: list[LogEntry] = []
    for entry_id, fields in items or ():
        entry = parse_entry(entry_id, fields)
        if entry is None:
            return entries, False, True
        entries.append(entry)
    return entries, len(entries) < LOG_BATCH, False


T = TypeVar("T")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _block_ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, _ms(seconds))


def _head(reply: list[Any], epoch: str) -> int:
    """The state's sequence from ``HMGET state m:epoch m:seq``; -1 if the epoch is not ours."""
    found, sequence = reply
    if found is None or _text(found) != epoch:
        return -1
    return int(sequence or 0)


class FleetScripts:
    """The log's scripts on one client (plain or cluster, sync or asyncio); every method returns
    a plan, performed by :func:`run` (sync client) or :func:`arun` (asyncio client)."""

    def __init__(self, client: Any, keys: FleetKeys) -> None:
        self.client = client
        self.keys = keys
        self.cluster = isinstance(client, (redis.cluster.RedisCluster,
                                           redis.asyncio.cluster.RedisCluster))
        self._invalidate = client.register_script(_INVALIDATE)
        self._resync = client.register_script(_RESYNC)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._acked = client.register_script(_ACKED)
        self._leave = client.register_script(_LEAVE)

    def _script(self, script: Any, *args: Any, client: Any = None) -> Callable[[], Any]:
        options = {} if client is None else {"client": client}
        return functools.partial(script, keys=self.keys.all, args=list(args), **options)

    def invalidate(self, tags: list[str], *, origin: str, sent_at: float, floor: int,
                   epoch_candidate: str) -> Plan[Recorded]:
        """Record an invalidation of ``tags`` by instance ``origin``: its sequence, the state's
        epoch, and how many others must still apply it (the first count :meth:`wait_acked`
        needs, without a round trip of its own)."""
        sequence, epoch, age, missing = yield self._script(self._invalidate, origin, repr(sent_at), floor,
                                                           epoch_candidate, LOG_LENGTH, *tags)
        return Recorded(int(sequence), _text(epoch), (int(missing), _ack_report([age])))

    def resync(self, *, floor: int, epoch_candidate: str, recovering: bool, instance: str,
               lease_seconds: float) -> Plan[tuple[str, int, dict[str, int]]]:
        """Join the state; (epoch, sequence, every tag's sequence)."""
        epoch, sequence = yield self._script(self._resync, floor, epoch_candidate, int(recovering),
                                             instance, _ms(lease_seconds), LOG_LENGTH)
        remote: dict[str, int] = {}
        cursor = 0
        while True:
            cursor, fields = yield functools.partial(self.client.hscan, self.keys.state, cursor,
                                                     match="t:*", count=5000)
            remote.update((_text(field)[2:], int(value)) for field, value in fields.items())
            if not int(cursor):
                return _text(epoch), int(sequence), remote

    def heartbeat(self, *, epoch: str, instance: str, applied: int,
                  lease_seconds: float) -> Plan[int | None]:
        """Renew the lease and acknowledge ``applied``: the state's sequence now (the log read
        next must reach it), or None if the epoch is not ``epoch``."""
        head = int((yield self._script(self._heartbeat, epoch, instance, applied,
                                       _ms(lease_seconds))))
        return None if head < 0 else head

    def read(self, after: int, *, block_seconds: float | None
             ) -> Plan[tuple[list[LogEntry], bool, bool]]:
        """Log entries after sequence ``after``, waiting up to ``block_seconds`` for one (None:
        answer at once): (entries, complete, malformed)."""
        reply = yield functools.partial(self.client.xread, {self.keys.log: f"{after}-0"},
                                        count=LOG_BATCH, block=_block_ms(block_seconds))
        return _entries(reply, self.keys.log)

    def poll(self, *, epoch: str, instance: str, after: int, lease_seconds: float,
             block_seconds: float | None, renew: bool = True) -> Plan[Polled]:
        """Acknowledge ``after``, read the state's epoch and head, then the log after
        ``after`` (waiting up to ``block_seconds``; None: answer at once). ``renew``: renew the
        lease too (:meth:`heartbeat`, a script); otherwise three plain commands. One round trip
        on a plain Redis (a pipeline), several through a Cluster client (the listener talks to
        the node that holds the keys instead: :func:`log_client`). The head is None, and the
        entries meaningless, if the epoch is not ``epoch``."""
        if self.cluster:
            return (yield from self._poll_in_steps(epoch=epoch, instance=instance, after=after,
                                                   lease_seconds=lease_seconds,
                                                   block_seconds=block_seconds, renew=renew))
        pipe = self.client.pipeline(transaction=False)
        if renew:
            yield self._script(self._heartbeat, epoch, instance, after, _ms(lease_seconds),
                               client=pipe)
        else:
            yield functools.partial(pipe.zadd, self.keys.acks, {member(instance, epoch): after},
                                    xx=True)
            yield functools.partial(pipe.hmget, self.keys.state, ["m:epoch", "m:seq"])
        yield functools.partial(pipe.xread, {self.keys.log: f"{after}-0"}, count=LOG_BATCH,
                                block=_block_ms(block_seconds))
        replies = yield pipe.execute
        head = int(replies[0]) if renew else _head(replies[1], epoch)
        return _polled(head, replies[-1], self.keys.log)

    def _poll_in_steps(self, *, epoch: str, instance: str, after: int, lease_seconds: float,
                       block_seconds: float | None, renew: bool) -> Plan[Polled]:
        head: int | None
        if renew:
            head = yield from self.heartbeat(epoch=epoch, instance=instance, applied=after,
                                             lease_seconds=lease_seconds)
        else:
            yield functools.partial(self.client.zadd, self.keys.acks,
                                    {member(instance, epoch): after}, xx=True)
            found = _head((yield functools.partial(self.client.hmget, self.keys.state,
                                                   ["m:epoch", "m:seq"])), epoch)
            head = None if found < 0 else found
        if head is None:
            return Polled(None, [], True, False)
        return Polled(head, *(yield from self.read(after, block_seconds=block_seconds)))

    def acked(self, sequence: int, *, instance: str, epoch: str) -> Plan[AckReport]:
        """Who, among the live instances but ``instance``, has not applied ``sequence``."""
        return _ack_report((yield self._script(self._acked, sequence, instance, epoch, 1)))

    def unacked_count(self, sequence: int, *, instance: str, epoch: str
                      ) -> Plan[tuple[int, AckReport]]:
        """How many live instances but ``instance`` have not applied ``sequence``, beside the
        report :meth:`acked` would give if none had (its ``missing`` left empty)."""
        reply = yield self._script(self._acked, sequence, instance, epoch, 0)
        report = _ack_report(reply[:1])
        return (0 if report.lost else int(reply[1])), report

    def wait_acked(self, sequence: int, *, instance: str, epoch: str, timeout_seconds: float,
                   counted: tuple[int, AckReport] | None = None) -> Plan[AckReport]:
        """Count the instances missing at 0.5, 1, 2, 4, 8, 8... ms until none is or
        ``timeout_seconds`` passed (one O(log N) query each time, whatever the fleet's size),
        then, unless none was missing, ask :meth:`acked` who. ``counted``: the first count, when
        the caller has it (:attr:`Recorded.unacked`): a round trip fewer."""
        deadline = time.monotonic() + timeout_seconds
        pause = FIRST_ACK_POLL_SECONDS
        while True:
            if counted is None:
                missing, report = yield from self.unacked_count(sequence, instance=instance, epoch=epoch)
            else:
                (missing, report), counted = counted, None
            if not missing:
                return report
            if time.monotonic() + pause > deadline:
                return (yield from self.acked(sequence, instance=instance, epoch=epoch))
            yield Pause(pause)
            pause = min(pause * 2, MAX_ACK_POLL_SECONDS)

    def leave(self, instance: str, *, epoch: str) -> Plan[None]:
        """Leave the members of ``epoch`` (a clean shutdown is not waited for)."""
        yield self._script(self._leave, instance, epoch)


def log_client(client: Any, keys: FleetKeys) -> Any:
    """The client a listener polls with: ``client`` itself on a plain Redis; on a Cluster, a
    plain client to the node holding the log's slot, so a poll is one pipelined round trip
    (through the Cluster client, each XREAD would first ask Redis for its keys: COMMAND
    GETKEYS). If the slot moves, the node answers MOVED: the listener reconnects and finds
    the new owner."""
    if not isinstance(client, redis.cluster.RedisCluster):
        return client
    node = client.get_node_from_key(keys.state)  # type: ignore[no-untyped-call]
    return client.get_redis_connection(node)


def encode_tags(tags: list[str]) -> str:
    """The ``g`` field as the scripts write it (tests compare against it)."""
    return json.dumps(tags) if tags else "[]"
