"""The codec: exact round trips, and every kind of bad bytes is a counted miss, never a raise."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cache.codec import FORMAT_VERSION, Codec
from scalekit.cache.entry import CachedEntry

text = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
entries = st.builds(
    CachedEntry,
    status=st.integers(0, 999),
    headers=st.lists(st.tuples(text, text), max_size=6).map(tuple),
    body=st.binary(max_size=3000),
    request_time=finite,
    response_time=finite,
    corrected_initial_age_seconds=finite,
    freshness_lifetime_seconds=finite,
    stale_while_revalidate_seconds=finite,
    stale_if_error_seconds=finite,
    requires_revalidation=st.booleans(),
    must_revalidate=st.booleans(),
    tags=st.lists(st.tuples(text, st.integers(0, 2**62)), max_size=4).map(tuple),
    vary=st.lists(text, max_size=3).map(tuple),
    secondary_key=text,
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
    return CachedEntry(200, (("content-type", "text/plain"),), b"x" * 5000, 1.0, 1.0, 0.0, 60.0)


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
