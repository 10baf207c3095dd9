"""The codec: exact round trips, and every kind of bad bytes is a counted miss, never a raise."""

from __future__ import annotations

import math
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cache.codec import FORMAT_VERSION, MAX_SECONDS, Codec
from scalekit.cache.entry import CachedEntry

text = st.text(max_size=20)
# Entries as the cache writes them: every value in the range decode accepts (statuses a
# response can have, header text HTTP can carry, finite non-negative times). Out-of-range
# values are the subject of tests of their own below.
seconds = st.floats(min_value=0, max_value=MAX_SECONDS, allow_nan=False, width=64)
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~", min_size=1, max_size=12)
values = st.text("".join(map(chr, [9, *range(0x20, 0x7F), *range(0x80, 0x100)])), max_size=20)
entries = st.builds(
    CachedEntry,
    status=st.integers(200, 599),
    headers=st.lists(st.tuples(names, values), max_size=6).map(tuple),
    body=st.binary(max_size=3000),
    request_time=seconds,
    response_time=seconds,
    corrected_initial_age_seconds=seconds,
    freshness_lifetime_seconds=seconds,
    stale_while_revalidate_seconds=seconds,
    stale_if_error_seconds=seconds,
    requires_revalidation=st.booleans(),
    must_revalidate=st.booleans(),
    tags=st.lists(st.tuples(text, st.integers(0, 2**62)), max_size=4).map(tuple),
    vary=st.lists(names, max_size=3).map(tuple),
    secondary_key=text,
    route=text,
    origin_seconds=seconds,
    db_seconds=seconds,
)
codecs = st.sampled_from([
    Codec(compress_min_bytes=0),
    Codec(compress_min_bytes=64),
    Codec(compress_min_bytes=64, secret=b"a-secret-of-16-bytes-or-more"),
])


@settings(max_examples=150, deadline=None)
@given(entry=entries, codec=codecs, key=text)
def test_decode_of_encode_is_the_entry(entry: CachedEntry, codec: Codec, key: str) -> None:
    assert codec.decode(key, codec.encode(key, entry)) == (entry, "ok")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), codec=codecs)
def test_garbage_never_raises(data: bytes, codec: Codec) -> None:
    entry, outcome = codec.decode("k", data)
    assert entry is None or outcome == "ok"


@settings(max_examples=150, deadline=None)
@given(entry=entries, codec=codecs, cut=st.integers(0, 10_000))
def test_truncated_bytes_are_a_miss(entry: CachedEntry, codec: Codec, cut: int) -> None:
    data = codec.encode("k", entry)
    truncated = data[: cut % len(data)]
    assert codec.decode("k", truncated)[0] is None


@settings(max_examples=150, deadline=None)
@given(entry=entries, position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_flipped_byte_breaks_the_signature(entry: CachedEntry, position: int, flip: int) -> None:
    codec = Codec(compress_min_bytes=64, secret=b"a-secret-of-16-bytes-or-more")
    data = bytearray(codec.encode("k", entry))
    data[position % len(data)] ^= flip
    assert codec.decode("k", bytes(data))[0] is None


def sample() -> CachedEntry:
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=b"x" * 5000,
                       request_time=1.0, response_time=1.0, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=60.0)


@pytest.mark.parametrize(("writer", "reader", "outcome"), [
    pytest.param(Codec(secret=b"secret-one-0123456789"), Codec(secret=b"secret-two-0123456789"),
                 "bad_signature", id="other secret"),
    pytest.param(Codec(), Codec(secret=b"secret-one-0123456789"), "unsigned",
                 id="unsigned entry where signing is on"),
])
def test_signing_refuses_foreign_entries(writer: Codec, reader: Codec, outcome: str) -> None:
    assert reader.decode("k", writer.encode("k", sample())) == (None, outcome)


def test_unknown_version_is_refused() -> None:
    data = bytearray(Codec().encode("k", sample()))
    data[2] = FORMAT_VERSION + 1
    assert Codec().decode("k", bytes(data)) == (None, "unknown_version")


def test_entry_copied_to_another_key_is_refused_even_unsigned() -> None:
    codec = Codec()
    assert codec.decode("other", codec.encode("k", sample())) == (None, "wrong_key")


def test_large_bodies_are_compressed() -> None:
    codec = Codec(compress_min_bytes=1024)
    assert len(codec.encode("k", sample())) < 1000


def test_wrong_types_inside_valid_msgpack_are_a_miss() -> None:
    payload = msgpack.packb({"__key__": "k", "status": "200", "headers": [], "body": b"",
                             "request_time": 1.0, "response_time": 1.0,
                             "corrected_initial_age_seconds": 0.0,
                             "freshness_lifetime_seconds": 1.0}, use_bin_type=True)
    assert Codec().decode("k", b"SK" + bytes((FORMAT_VERSION, 0)) + payload) == (None, "garbage")


def test_pickle_is_never_involved() -> None:
    import pickle

    assert Codec().decode("k", pickle.dumps(sample()))[0] is None


def entry_with(**fields: object) -> CachedEntry:
    base = {"status": 200, "headers": (("content-type", "text/plain"),), "body": b"hi",
            "request_time": 1.0, "response_time": 1.0, "corrected_initial_age_seconds": 0.0,
            "freshness_lifetime_seconds": 60.0}
    return CachedEntry(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize("entry", [
    pytest.param(entry_with(status=0), id="status 0 on a response"),
    pytest.param(entry_with(status=99), id="status 99"),
    pytest.param(entry_with(status=1000), id="status 1000"),
    pytest.param(entry_with(status=-200), id="negative status"),
    pytest.param(entry_with(headers=(("x-a", "1\r\nset-cookie: a=b"),)), id="CR LF in a value"),
    pytest.param(entry_with(headers=(("x-a", "a\nb"),)), id="LF in a value"),
    pytest.param(entry_with(headers=(("x-a", "a\x00b"),)), id="NUL in a value"),
    pytest.param(entry_with(headers=(("x-a", "caf\u00e9 \u20ac"),)), id="value beyond latin-1"),
    pytest.param(entry_with(headers=(("x a", "1"),)), id="space in a name"),
    pytest.param(entry_with(headers=(("x:a", "1"),)), id="colon in a name"),
    pytest.param(entry_with(headers=(("", "1"),)), id="empty name"),
    pytest.param(entry_with(freshness_lifetime_seconds=math.inf), id="infinite lifetime"),
    pytest.param(entry_with(freshness_lifetime_seconds=-1.0), id="negative lifetime"),
    pytest.param(entry_with(response_time=math.nan), id="NaN response time"),
    pytest.param(entry_with(request_time=-math.inf), id="minus infinity request time"),
    pytest.param(entry_with(corrected_initial_age_seconds=math.nan), id="NaN age"),
    pytest.param(entry_with(stale_while_revalidate_seconds=math.inf), id="infinite swr"),
    pytest.param(entry_with(stale_if_error_seconds=MAX_SECONDS * 2), id="sie past the bound"),
    pytest.param(entry_with(vary=("accept language",)), id="Vary names a non-token"),
    # Added to counters on every hit: one NaN or negative would corrupt them for good.
    pytest.param(entry_with(origin_seconds=math.nan), id="NaN origin time"),
    pytest.param(entry_with(origin_seconds=-0.5), id="negative origin time"),
    pytest.param(entry_with(db_seconds=math.inf), id="infinite database time"),
])
def test_values_out_of_range_are_refused(entry: CachedEntry) -> None:
    codec = Codec(compress_min_bytes=0)
    assert codec.decode("k", codec.encode("k", entry)) == (None, "out_of_range")


def test_a_vary_index_keeps_its_status_zero() -> None:
    index = entry_with(status=0, headers=(), body=b"", vary=("accept",), is_vary_index=True,
                       variants_id="abc")
    codec = Codec()
    assert codec.decode("k", codec.encode("k", index)) == (index, "ok")


def test_inflating_stops_at_the_payload_bound() -> None:
    codec = Codec(max_payload_bytes=64 * 1024)
    honest = entry_with(body=b"a" * 60_000)
    assert codec.decode("k", codec.encode("k", honest)) == (honest, "ok")
    bomb = msgpack.packb({"__key__": "k", "body": b"\0" * (4 * 1024 * 1024)}, use_bin_type=True)
    data = b"SK" + bytes((FORMAT_VERSION, 0x01)) + zlib.compress(bomb, 9)
    assert len(data) < 8 * 1024
    assert codec.decode("k", data) == (None, "too_large")
