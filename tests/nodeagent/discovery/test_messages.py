"""DHT wire messages: round trips, strict parsing (every malformed shape is a declared error),
frame caps, and the first-bytes rule that lets the control port carry the DHT."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.discovery.messages import (
    MAX_FRAME,
    Error,
    FindNode,
    FindValue,
    FrameTooLarge,
    Malformed,
    MessageError,
    Nodes,
    Ping,
    Pong,
    Store,
    Stored,
    UnknownType,
    UnsupportedVersion,
    Value,
    WireContact,
    decode,
    encode,
    frame_length,
    is_dht_frame_start,
)
from nodeagent.protocol.control import Handshake, frame_clear_handshake

KEY = bytes(range(20))
REC = b"\x01" * 12_400
C4 = WireContact(b"\x02" * 20, "198.18.0.7", 8443)
C6 = WireContact(b"\x03" * 20, "2001:db8::7", 1)

MESSAGES = [
    Ping(1),
    Ping(2, me=REC, want=True),
    FindNode(3, KEY),
    FindNode(4, KEY, me=REC, want=True),
    FindValue(5, KEY, want=True),
    Store(6, KEY, b"\x04" * 40_000, me=REC),
    Pong(7),
    Pong(8, you=REC),
    Nodes(9, ()),
    Nodes(10, tuple([C4, C6] * 10), you=REC),
    Value(11, REC, (C4,), you=REC),
    Stored(12, "stored"),
    Stored(13, "invalid", "wrong_ca"),
    Error(0, "malformed", "not a msgpack value"),
    Error(2**32 - 1, "rate_limited"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    frame = encode(msg)
    assert frame_length(frame[:4]) == len(frame) - 4
    assert decode(frame[4:]) == msg
    assert is_dht_frame_start(frame[:5])


def test_the_largest_answer_fits_a_frame():
    biggest = Value(1, b"\x05" * 40 * 1024, tuple([C6] * 20), you=b"\x06" * 16 * 1024)
    assert len(encode(biggest)) <= MAX_FRAME + 4


def test_a_control_frame_is_not_taken_for_a_dht_frame():
    clear = frame_clear_handshake(b"\x01" * 100)
    assert not is_dht_frame_start(clear[:5])
    assert not is_dht_frame_start(b"\x00\x00\x00\x09\x02")  # a sealed control frame
    assert not is_dht_frame_start(b"\x00\x00")
    assert Handshake  # the control codec's own frame kinds are 1 and 2


def raw(d):
    return msgpack.packb(d, use_bin_type=True)


BASE = {"v": 1, "t": "find_node", "rid": 1, "key": KEY}

BAD = [
    (b"", Malformed),
    (b"\xc1", Malformed),  # never used in msgpack
    (raw([1, 2]), Malformed),
    (raw(BASE) + b"\x00", Malformed),  # trailing bytes
    (raw({**BASE, "v": 2}), UnsupportedVersion),
    (raw({**BASE, "v": True}), UnsupportedVersion),
    (raw({k: v for k, v in BASE.items() if k != "v"}), UnsupportedVersion),
    (raw({**BASE, "t": "FIND_NODE"}), UnknownType),
    (raw({**BASE, "t": 3}), UnknownType),
    (raw({**BASE, "rid": 0}), Malformed),
    (raw({**BASE, "rid": 2**32}), Malformed),
    (raw({**BASE, "rid": True}), Malformed),
    (raw({**BASE, "rid": "1"}), Malformed),
    (raw({k: v for k, v in BASE.items() if k != "key"}), Malformed),
    (raw({**BASE, "key": KEY[:19]}), Malformed),
    (raw({**BASE, "key": KEY.hex()}), Malformed),
    (raw({**BASE, "want": 1}), Malformed),
    (raw({**BASE, "extra": 1}), Malformed),
    (raw({**BASE, 5: 1}), Malformed),  # non-string map key
    (raw({**BASE, "me": b""}), Malformed),
    (raw({**BASE, "me": b"x" * (16 * 1024 + 1)}), Malformed),
    (raw({"v": 1, "t": "store", "rid": 1, "key": KEY, "rec": b"x" * (40 * 1024 + 1)}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1, "nodes": [[KEY, b"\x01\x02\x03\x04", 0]]}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1, "nodes": [[KEY, b"\x01\x02\x03", 1]]}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1, "nodes": [[KEY, b"\x01\x02\x03\x04"]]}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1, "nodes": [[KEY[:5], b"\x01\x02\x03\x04", 1]]}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1, "nodes": [[KEY, b"\x01\x02\x03\x04", 1]] * 21}), Malformed),
    (raw({"v": 1, "t": "nodes", "rid": 1, "nodes": {"a": 1}}), Malformed),
    (raw({"v": 1, "t": "stored", "rid": 1, "status": ""}), Malformed),
    (raw({"v": 1, "t": "stored", "rid": 1, "status": "x" * 33}), Malformed),
    (raw({"v": 1, "t": "error", "rid": 1, "code": "bad\nline"}), Malformed),
    (raw({"v": 1, "t": "error", "rid": 1, "code": "x", "text": "y" * 201}), Malformed),
    (raw({"v": 1, "t": "ping", "rid": 1, "deep": [[[[[[1]]]]]]}), Malformed),
    (b"\xdf\xff\xff\xff\xff", Malformed),  # a map announcing 4 billion entries
    (b"\xc6\x7f\xff\xff\xff", Malformed),  # a 2 GiB bin header
]


@pytest.mark.parametrize(("body", "error"), BAD, ids=range(len(BAD)))
def test_malformed_bodies_raise_their_declared_error(body, error):
    with pytest.raises(error) as exc:
        decode(body)
    assert exc.value.code in ("malformed", "version", "unknown_type")


def test_frame_headers_are_checked_before_reading():
    assert frame_length(b"\x00\x01\x00\x00") == MAX_FRAME
    with pytest.raises(FrameTooLarge) as exc:
        frame_length(b"\x00\x01\x00\x01")
    assert exc.value.code == "too_large"
    with pytest.raises(FrameTooLarge):
        frame_length(b"\xff\xff\xff\xff")
    with pytest.raises(Malformed):
        frame_length(b"\x00\x00\x00\x00")
    with pytest.raises(Malformed):
        frame_length(b"\x00\x00\x01")
    with pytest.raises(FrameTooLarge):
        decode(b"\x80" * (MAX_FRAME + 1))


def test_encoding_refuses_what_decoding_would():
    for bad in (
        FindNode(1, KEY[:3]),
        FindNode(0, KEY),
        Ping(1, me=b"x" * (16 * 1024 + 1)),
        Nodes(1, (WireContact(KEY, "not-an-ip", 1),)),
        Nodes(1, (WireContact(KEY, "198.18.0.1", 0),)),
        Nodes(1, tuple([C4] * 21)),
        Stored(1, ""),
        Value(1, b"x" * 40 * 1024, (), you=b"y" * 16 * 1024 + b"z" * 10_000),
    ):
        with pytest.raises(MessageError):
            encode(bad)
    with pytest.raises(UnknownType):
        encode("ping")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_message_errors(body):
    try:
        decode(body)
    except MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["v", "t", "rid", "key", "rec", "me", "want", "you", "nodes", "status", "code", "x"]),
        st.one_of(st.integers(-5, 2**33), st.booleans(), st.binary(max_size=30), st.text(max_size=10),
                  st.lists(st.binary(max_size=20), max_size=3), st.none()),
    )
)
def test_random_maps_only_raise_message_errors(d):
    try:
        decode(raw(d))
    except MessageError:
        pass


def test_unknown_keys_of_both_str_and_bytes_are_malformed_not_a_type_error():
    # found writing the DHT fuzz harness (fuzz/fuzz_dht.py): the error message sorted the unknown
    # keys, and a map with a str key and a bytes key made sorted() raise TypeError out of the decoder
    body = msgpack.packb({"v": 1, "t": "ping", "rid": 1, "x": 1, b"y": 2}, use_bin_type=True)
    with pytest.raises(Malformed, match="unknown keys"):
        decode(body)
