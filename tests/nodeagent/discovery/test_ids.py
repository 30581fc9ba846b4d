"""DHT ids: parsing, XOR distance, bucket index, random ids per bucket, derived keys."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.discovery.ids import (
    IdError,
    addr_key,
    bucket_index,
    distance,
    id_hex,
    random_id_in_bucket,
    revocations_key,
    to_id,
)

ids = st.binary(min_size=20, max_size=20)


def test_to_id_accepts_bytes_and_lowercase_hex_only():
    raw = bytes(range(20))
    assert to_id(raw) == raw
    assert to_id(raw.hex()) == raw
    assert id_hex(raw) == raw.hex()
    for bad in (raw.hex().upper(), raw.hex()[:-1], b"\x00" * 19, b"\x00" * 21, 5, None):
        with pytest.raises(IdError):
            to_id(bad)


@given(ids, ids)
def test_distance_is_xor_and_bucket_is_its_top_bit(a, b):
    d = distance(a, b)
    assert d == distance(b, a)
    assert d == int.from_bytes(bytes(x ^ y for x, y in zip(a, b, strict=True)), "big")
    if a == b:
        assert d == 0
        with pytest.raises(IdError):
            bucket_index(a, b)
    else:
        i = bucket_index(a, b)
        assert 2**i <= d < 2 ** (i + 1)
        # naive: the first differing bit, counted from the most significant end
        bits_a = format(int.from_bytes(a, "big"), "0160b")
        bits_b = format(int.from_bytes(b, "big"), "0160b")
        first = next(n for n in range(160) if bits_a[n] != bits_b[n])
        assert i == 159 - first


@given(ids, st.integers(0, 159), st.binary(min_size=20, max_size=40))
def test_random_id_in_bucket_lands_in_that_bucket(own, index, entropy):
    target = random_id_in_bucket(own, index, entropy)
    assert bucket_index(own, target) == index


def test_random_id_in_bucket_checks_its_arguments():
    with pytest.raises(IdError):
        random_id_in_bucket(bytes(20), 160, bytes(20))
    with pytest.raises(IdError):
        random_id_in_bucket(bytes(20), 3, bytes(19))


def test_derived_keys_are_labelled_hashes():
    label = b"shadowmesh/dht/addr/v1\0"
    assert addr_key("10.10.10.5") == hashlib.sha256(label + bytes([10, 10, 10, 5])).digest()[:20]
    assert addr_key("10.10.10.5") != addr_key("10.10.10.6")
    assert addr_key("::ffff:10.10.10.5") != addr_key("10.10.10.5")  # v4 and v6 are different keys
    ca = bytes(range(20))
    assert revocations_key(ca) == hashlib.sha256(b"shadowmesh/dht/revocations/v1\0" + ca).digest()[:20]
    assert revocations_key(ca) != addr_key("10.10.10.5")
    with pytest.raises(IdError):
        revocations_key(b"short")
    with pytest.raises(ValueError):
        addr_key("10.10.10.300")
