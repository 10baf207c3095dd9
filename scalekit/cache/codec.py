"""CachedEntry <-> bytes for Redis and disk: msgpack under a format version, never pickle.

Layout: ``b"SK"`` magic, one format-version byte, one flags byte, then (when signing) a 32-byte
HMAC-SHA256 over the cache key, the header and the payload, then the payload: a msgpack map of
every :class:`CachedEntry` field by name plus the cache key it was stored under, zlib-compressed
when large. Fields are found by :func:`dataclasses.fields`, so a field added to CachedEntry with
a default needs no change here; a field this version does not know is ignored, a missing one
takes its default.

Decoding never raises: garbage, an unknown version, a bad signature, a wrong key, a value of
the wrong type or out of range, or a payload that inflates past ``max_payload_bytes`` gives
``None`` and a reason (the caller counts it as a miss and deletes it). Values are checked by
range as well as type, because a tier hands back whatever was written to it (by another version,
by whoever can write to Redis, by a flipped bit): a status outside 200-599 or a header value with
CR/LF would otherwise be served on every request, and an infinite or NaN time never expires.
Pickle is never used: whoever can write to Redis would run code in every app process.

>>> from scalekit.cache.entry import CachedEntry
>>> entry = CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=b"hi",
...                     request_time=1.0, response_time=1.0, corrected_initial_age_seconds=0.0,
...                     freshness_lifetime_seconds=60.0)
>>> codec = Codec(secret=b"0123456789abcdef")
>>> codec.decode("k", codec.encode("k", entry)) == (entry, "ok")
True
>>> codec.decode("other-key", codec.encode("k", entry))[1]
'bad_signature'
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import operator
import re
import types
import typing
import zlib
from collections.abc import Callable
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]

from .entry import CachedEntry

__all__ = ["FORMAT_VERSION", "MAX_SECONDS", "Codec", "DecodeOutcome", "is_in_range"]

MAGIC = b"SK"
FORMAT_VERSION = 1
FLAG_COMPRESSED = 0x01
FLAG_SIGNED = 0x02
MAC_BYTES = 32
HEADER_BYTES = 4
# A compressed payload inflates at most this far unless the codec is told otherwise (the
# tiers pass their largest entry): a zlib bomb in Redis is a quick miss, not a stall and an OOM.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
# Every stored time and duration is finite, non-negative and below this (about 31,700 years).
MAX_SECONDS = 1e12

DecodeOutcome = Literal["ok", "garbage", "unknown_version", "bad_signature", "unsigned", "wrong_key",
                        "out_of_range", "too_large"]

_FIELDS = tuple(dataclasses.fields(CachedEntry))
_HINTS = typing.get_type_hints(CachedEntry)


class Codec:
    """Encoder/decoder with this deployment's compression threshold and optional HMAC key.

    With a secret, unsigned or wrongly signed bytes are refused; without one, signed bytes are
    still read (the signature cannot be checked, so it is ignored).
    """

    def __init__(self, *, compress_min_bytes: int = 2048, secret: bytes | None = None,
                 max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.compress_min_bytes = compress_min_bytes
        self.secret = secret
        self.max_payload_bytes = max_payload_bytes
        # HMAC of the secret alone, copied per entry: the key schedule (two SHA-256 blocks)
        # is paid once here instead of on every L2/L3 hit.
        self._signer = None if secret is None else hmac.new(secret, digestmod=hashlib.sha256)

    def encode(self, key: str, entry: CachedEntry) -> bytes:
        """The stored form of ``entry`` under cache key ``key``."""
        # Tuples as they are: msgpack packs them as arrays, the same bytes as lists.
        fields = dict(zip(_NAMES, _ENTRY_VALUES(entry)))
        fields["__key__"] = key
        payload: bytes = msgpack.packb(fields, use_bin_type=True)
        flags = 0
        if self.compress_min_bytes and len(payload) >= self.compress_min_bytes:
            compressed = zlib.compress(payload, 1)  # level 1: most of the gain, a fraction of the CPU
            if len(compressed) < len(payload):
                payload, flags = compressed, flags | FLAG_COMPRESSED
        if self._signer is None:
            return MAGIC + bytes((FORMAT_VERSION, flags)) + payload
        flags |= FLAG_SIGNED
        header = MAGIC + bytes((FORMAT_VERSION, flags))
        return header + self._mac(key, header, payload) + payload

    def decode(self, key: str, data: bytes | None) -> tuple[CachedEntry | None, DecodeOutcome]:
        """The entry stored as ``data`` under ``key``, or None with the reason it was refused."""
        if not data or len(data) < HEADER_BYTES or data[:2] != MAGIC:
            return None, "garbage"
        if data[2] != FORMAT_VERSION:
            return None, "unknown_version"
        flags = data[3]
        # One view, sliced without copying: the MAC and msgpack read the payload in place.
        view = memoryview(data)
        start = HEADER_BYTES
        if flags & FLAG_SIGNED:
            start += MAC_BYTES
            if len(data) < start:
                return None, "garbage"
            if self._signer is not None and not hmac.compare_digest(
                    view[HEADER_BYTES:start], self._mac(key, view[:HEADER_BYTES], view[start:])):
                return None, "bad_signature"
        elif self._signer is not None:
            return None, "unsigned"
        payload: bytes | memoryview = view[start:]
        if flags & FLAG_COMPRESSED:
            inflated, outcome = _inflate(payload, self.max_payload_bytes)
            if inflated is None:
                return None, outcome
            payload = inflated
        return _unpack(key, payload)

    def _mac(self, key: str, header: bytes | memoryview, payload: bytes | memoryview) -> bytes:
        assert self._signer is not None  # callers check; not reachable from input
        signer = self._signer.copy()
        # The key is signed too: a valid entry copied to another key is refused (never served under another key).
        signer.update(key.encode("utf-8", "surrogatepass") + b"\x00")
        signer.update(header)
        signer.update(payload)
        return signer.digest()


def _inflate(payload: bytes | memoryview, limit: int) -> tuple[bytes | None, DecodeOutcome]:
    """The inflated payload, or None and why: past ``limit`` bytes inflating stops there."""
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(payload, limit + 1)
    except zlib.error:
        return None, "garbage"
    if len(out) > limit:
        return None, "too_large"
    if inflater.unconsumed_tail or not inflater.eof:
        return None, "garbage"
    return out, "ok"


def _unpack(key: str, payload: bytes | memoryview) -> tuple[CachedEntry | None, DecodeOutcome]:
    try:
        fields = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - msgpack raises many unrelated types on garbage
        return None, "garbage"
    if type(fields) is not dict or fields.get("__key__") != key:
        return None, "wrong_key" if type(fields) is dict else "garbage"
    if fields.keys() == _ALL_KEYS:
        # Fast path (an entry written by this version): every field present with its exact
        # type, checked with a few C-level comparisons; the general path below handles the rest.
        values = _ALL_VALUES(fields)
        if (tuple(map(type, _SCALAR_VALUES(values))) == _SCALAR_TYPES
                and all(map(operator.call, _CONTAINER_CHECKS, _CONTAINER_VALUES(values)))):
            try:
                # By position, in the fields' order (see scalekit/records.py): a keyword call
                # would pack the 19 fields into a dict for __init__ to unpack again.
                entry = CachedEntry(*values)
            except Exception:  # noqa: BLE001 - a future __post_init__ check: still a miss
                return None, "garbage"
            return (entry, "ok") if is_in_range(entry) else (None, "out_of_range")
    converted: dict[str, Any] = {}
    for name, required, convert in _CONVERTERS:
        if name not in fields:
            if required:
                return None, "garbage"
            continue
        value = convert(fields[name])
        if value is _INVALID:
            return None, "garbage"
        converted[name] = value
    try:
        entry = CachedEntry(**converted)
    except Exception:  # noqa: BLE001 - a future __post_init__ check: still only a miss
        return None, "garbage"
    return (entry, "ok") if is_in_range(entry) else (None, "out_of_range")


# A stored header name: a lower-case token (RFC 9110 §5.1), one per line here.
_FIELD_NAMES = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+(?:\n[!#$%&'*+\-.^_`|~0-9a-z]+)*")
# RFC 9110 §5.5: a field value is field-vchar, SP and HTAB, obs-text allowed; never CR, LF or
# NUL (they would end or split the header block) nor text beyond latin-1 (drivers send bytes).
_FIELD_VALUE_INVALID = re.compile(r"[^\t\x20-\x7e\x80-\xff]")


def is_in_range(entry: CachedEntry) -> bool:
    """Whether every value of ``entry`` can be served as HTTP: a final status (a variant index,
    never served, has none), header names and values HTTP can carry, finite non-negative times and durations."""
    if not 200 <= entry.status <= 599 and not entry.is_vary_index:  # an index is never served
        return False
    top = MAX_SECONDS
    # Chained comparisons are False for NaN, so NaN is out of range too.
    if not (0.0 <= entry.request_time <= top and 0.0 <= entry.response_time <= top
            and 0.0 <= entry.corrected_initial_age_seconds <= top
            and 0.0 <= entry.freshness_lifetime_seconds <= top
            and 0.0 <= entry.stale_while_revalidate_seconds <= top
            and 0.0 <= entry.stale_if_error_seconds <= top
            and 0.0 <= entry.origin_seconds <= top and 0.0 <= entry.db_seconds <= top):
        return False
    headers = entry.headers
    if headers:
        if _FIELD_NAMES.fullmatch("\n".join(map(_NAME, headers))) is None:
            return False
        values = "".join(map(_VALUE, headers))
        if not (values.isascii() and values.isprintable()) and _FIELD_VALUE_INVALID.search(values):
            return False
    return not entry.vary or _FIELD_NAMES.fullmatch("\n".join(entry.vary)) is not None


_NAME = operator.itemgetter(0)
_VALUE = operator.itemgetter(1)
_INVALID: Any = object()
Converter = Callable[[Any], Any]
Check = Callable[[Any], bool]


def _converter(hint: Any) -> Converter:
    """A function giving a msgpack value as the annotated type, or _INVALID (built once).

    msgpack already returns tuples (``use_list=False``), so values are checked in place and
    only ints standing for floats are converted.
    """
    if hint is float:
        return lambda value: float(value) if type(value) in (int, float) else _INVALID
    check = _check(hint)
    return lambda value: value if check(value) else _INVALID


def _check(hint: Any) -> Check:
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return _check_many(args[0])
        if all(arg in _PRIMITIVES for arg in args):
            # (str, str) header pairs: one C-level comparison of the types.
            return lambda value: type(value) is tuple and tuple(map(type, value)) == args
        positions = tuple(_check(arg) for arg in args)
        return lambda value: (type(value) is tuple and len(value) == len(positions)
                              and all(check(part) for check, part in zip(positions, value)))
    if origin in (typing.Union, types.UnionType):
        options = tuple(_check(option) for option in typing.get_args(hint))
        return lambda value: any(check(value) for check in options)
    if hint is type(None):
        return lambda value: value is None
    if hint is float:
        return lambda value: type(value) is float  # inside containers: exact types only
    if hint in (int, bool, str, bytes):
        return lambda value: type(value) is hint
    return lambda value: True  # an annotation this codec does not know: trust msgpack


_PRIMITIVES = (int, bool, str, bytes, float)
_TUPLE = {tuple}


def _check_many(item_hint: Any) -> Check:
    if item_hint in _PRIMITIVES:
        allowed = {item_hint}
        return lambda value: type(value) is tuple and set(map(type, value)) <= allowed
    args = typing.get_args(item_hint)
    if typing.get_origin(item_hint) is tuple and args and all(arg in _PRIMITIVES for arg in args):
        # ((name, value), ...) of primitives: column by column, all in C.
        width = {len(args)}
        if len(set(args)) == 1:  # (str, str) header pairs: every item flattened, one type
            same = {args[0]}
            return lambda value: (type(value) is tuple and set(map(type, value)) <= _TUPLE
                                  and set(map(len, value)) <= width
                                  and set(map(type, itertools.chain.from_iterable(value))) <= same)
        columns = tuple((operator.itemgetter(index), {arg}) for index, arg in enumerate(args))
        return lambda value: (type(value) is tuple and set(map(type, value)) <= _TUPLE
                              and set(map(len, value)) <= width
                              and all(set(map(type, map(get, value))) <= allowed
                                      for get, allowed in columns))
    item = _check(item_hint)
    return lambda value: type(value) is tuple and all(map(item, value))


def _tuple_getter(positions: tuple[int, ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """itemgetter that always gives a tuple (itemgetter of one position gives the item)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    return lambda values: tuple(values[position] for position in positions)


_CONVERTERS = tuple(
    (f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
     _converter(_HINTS[f.name]))
    for f in _FIELDS
)

_NAMES = tuple(f.name for f in _FIELDS)
_ALL_KEYS = frozenset((*_NAMES, "__key__"))
_ALL_VALUES = operator.itemgetter(*_NAMES)
_ENTRY_VALUES = operator.attrgetter(*_NAMES)
_SCALAR_POSITIONS = tuple(i for i, name in enumerate(_NAMES) if _HINTS[name] in _PRIMITIVES)
_SCALAR_TYPES = tuple(_HINTS[_NAMES[i]] for i in _SCALAR_POSITIONS)
_SCALAR_VALUES = operator.itemgetter(*_SCALAR_POSITIONS)
_CONTAINER_POSITIONS = tuple(i for i, name in enumerate(_NAMES) if _HINTS[name] not in _PRIMITIVES)
_CONTAINER_CHECKS = tuple(_check(_HINTS[_NAMES[i]]) for i in _CONTAINER_POSITIONS)
_CONTAINER_VALUES = _tuple_getter(_CONTAINER_POSITIONS)
