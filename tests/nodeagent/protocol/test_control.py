"""Control-channel codec: message round trips, strict parsing, framing caps, sealed sequence."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol.control import (
    MAX_CONTROL_MESSAGE,
    MAX_ROUTES,
    BadControlTag,
    Close,
    CloseReason,
    ControlChannel,
    ControlCipher,
    ControlError,
    Deframer,
    FrameKind,
    Handshake,
    Keepalive,
    RelayHandshake,
    Routes,
    UdpEndpoint,
    decode_message,
    encode_message,
    frame_clear_handshake,
    frame_length,
)

K1, K2 = bytes([1]) * 32, bytes([2]) * 32
PID = "ab" * 20

MESSAGES = [
    UdpEndpoint(ipaddress.ip_address("198.18.0.3"), 9443),
    UdpEndpoint(ipaddress.ip_address("0.0.0.0"), 0),
    UdpEndpoint(ipaddress.ip_address("fd00::1"), 65535),
    Keepalive(2**64 - 1, 0, 0),
    Keepalive(1, 2, 2**32 - 1),
    Routes(0, ()),
    Routes(7, (ipaddress.ip_network("10.10.10.0/24"), ipaddress.ip_network("0.0.0.0/0"),
               ipaddress.ip_network("fd00::/8"), ipaddress.ip_network("192.168.1.7/32"))),
    Close(CloseReason.NORMAL),
    Close(CloseReason.REVOKED, "revoked by admin ✓"),
    RelayHandshake(PID, b"\x01" + bytes(100)),
    RelayHandshake("00" * 20, b"\x03"),
    Handshake(b"\x02" * 9000),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg):
    assert decode_message(encode_message(msg)) == msg


# numbered table of malformed message bodies: (case, bytes, reason fragment)
MALFORMED = [
    (1, b"", "truncated"),
    (2, b"\x00", "unknown control message type"),
    (3, b"\x07", "unknown control message type"),
    (4, b"\x01\x05" + bytes(6), "ip version"),
    (5, b"\x01\x04\x01\x02\x03\x04\x00", "truncated"),
    (6, b"\x01\x04\x01\x02\x03\x04\x00\x01\x00", "trailing"),
    (7, b"\x02" + bytes(19), "truncated"),
    (8, b"\x02" + bytes(21), "trailing"),
    (9, b"\x03" + bytes(8) + b"\x00\x01" + b"\x04\x0a\x0a\x0a\x01\x18", "bad route"),
    (10, b"\x03" + bytes(8) + b"\x00\x01" + b"\x04\x0a\x0a\x0a\x00\x21", "bad route"),
    (11, b"\x03" + bytes(8) + struct.pack("!H", MAX_ROUTES + 1), "at most"),
    (12, b"\x03" + bytes(8) + b"\x00\x02" + b"\x04\x0a\x0a\x0a\x00\x18", "truncated"),
    (13, b"\x04\x09\x00", "close reason"),
    (14, b"\x04\x00\x02\xff\xfe", "UTF-8"),
    (15, b"\x04\x00\x05ab", "truncated"),
    (16, b"\x05" + bytes(20), "empty"),
    (17, b"\x05" + bytes(19), "truncated"),
    (18, b"\x06", "empty"),
]


@pytest.mark.parametrize(("case", "data", "reason"), MALFORMED, ids=[f"case{c[0]}" for c in MALFORMED])
def test_malformed_message_is_refused(case, data, reason):
    with pytest.raises(ControlError, match=reason):
        decode_message(data)


@pytest.mark.parametrize(
    "msg",
    [
        UdpEndpoint(ipaddress.ip_address("1.2.3.4"), 70000),
        UdpEndpoint("not an ip", 1),
        Keepalive(-1),
        Keepalive(0, 0, 2**32),
        Routes(0, ("10.0.0.1/24",)),
        Routes(
            0, tuple(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(MAX_ROUTES + 1))
        ),
        Close(99),
        Close(CloseReason.NORMAL, "x" * 256),
        RelayHandshake("AB" * 20, b"\x01"),
        RelayHandshake(PID, b""),
        Handshake(b""),
        "not a message",
    ],
)
def test_encoding_invalid_values_raises_control_error(msg):
    with pytest.raises(ControlError):
        encode_message(msg)


# --- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "ok"), [(b"\x00\x00\x00\x00", False), (b"\x00\x00\x00\x01", True),
                                            (struct.pack("!I", MAX_CONTROL_MESSAGE), True),
                                            (struct.pack("!I", MAX_CONTROL_MESSAGE + 1), False),
                                            (b"\xff\xff\xff\xff", False), (b"\x00\x00\x01", False)])
def test_frame_length_is_capped(prefix, ok):
    if ok:
        assert frame_length(prefix) >= 1
    else:
        with pytest.raises(ControlError):
            frame_length(prefix)


def test_oversized_frame_is_refused_as_soon_as_its_length_arrives():
    d = Deframer()
    with pytest.raises(ControlError):
        d.feed(struct.pack("!I", MAX_CONTROL_MESSAGE + 1))
    assert d.buffered == 4
    with pytest.raises(ControlError, match="already failed"):
        d.feed(b"")


def test_deframer_reassembles_frames_split_anywhere():
    frames = [frame_clear_handshake(b"\x01" * 1655), frame_clear_handshake(b"\x02abc")]
    stream = b"".join(frames)
    for split in (1, 3, 4, 5, 100, 1659, 1660, len(stream) - 1):
        d = Deframer()
        got = d.feed(stream[:split]) + d.feed(stream[split:])
        assert [f for _, f in got] == frames and d.buffered == 0


def test_byte_by_byte_feed_gives_the_same_frames():
    stream = frame_clear_handshake(b"\x01hello") * 3
    d = Deframer()
    got = [f for b in stream for f in d.feed(bytes([b]))]
    assert len(got) == 3


@pytest.mark.parametrize("junk", ["text", None, 5])
def test_non_bytes_input_is_a_control_error(junk):
    with pytest.raises(ControlError):
        Deframer().feed(junk)
    with pytest.raises(ControlError):
        ControlCipher(K1, K2).open(junk)
    with pytest.raises(ControlError):
        decode_message(junk)


def test_unknown_frame_kind_is_refused():
    with pytest.raises(ControlError, match="kind"):
        Deframer().feed(b"\x00\x00\x00\x02\x09x")


def test_clear_handshake_frame_limits():
    with pytest.raises(ControlError):
        frame_clear_handshake(b"")
    with pytest.raises(ControlError):
        frame_clear_handshake(bytes(MAX_CONTROL_MESSAGE))
    assert frame_length(frame_clear_handshake(bytes(MAX_CONTROL_MESSAGE - 1))[:4]) == MAX_CONTROL_MESSAGE


# --- sealed messages --------------------------------------------------------------------------


def pair():
    return ControlCipher(K1, K2), ControlCipher(K2, K1)


def test_sealed_messages_open_on_the_other_side_in_order():
    a, b = pair()
    for msg in MESSAGES:
        frame = a.seal(msg)
        ((kind, whole),) = Deframer().feed(frame)
        assert kind is FrameKind.SEALED and whole == frame
        assert b.open(frame) == msg


def test_sealed_message_does_not_show_its_content():
    a, _ = pair()
    assert b"revoked by admin" not in a.seal(Close(CloseReason.REVOKED, "revoked by admin"))


def test_replayed_sealed_frame_is_refused():
    a, b = pair()
    f = a.seal(Keepalive(1))
    b.open(f)
    with pytest.raises(ControlError, match="counter"):
        b.open(f)


def test_dropped_or_reordered_sealed_frame_is_refused():
    a, b = pair()
    a.seal(Keepalive(1))
    with pytest.raises(ControlError, match="counter"):
        b.open(a.seal(Keepalive(2)))


def test_every_flipped_bit_of_a_sealed_frame_is_refused():
    a, _ = pair()
    frame = a.seal(UdpEndpoint(ipaddress.ip_address("198.18.0.3"), 9443))
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        with pytest.raises(ControlError):
            ControlCipher(K2, K1).open(bytes(bad))


def test_frame_sealed_with_the_data_direction_key_does_not_open():
    a = ControlCipher(K1, K2)
    with pytest.raises(BadControlTag):
        ControlCipher(K2, K2).open(a.seal(Keepalive(1)))


def test_bad_control_keys_are_refused():
    with pytest.raises(ControlError):
        ControlCipher(bytes(31), K1)


# --- the channel state machine ----------------------------------------------------------------


def test_channel_accepts_clear_handshake_then_only_sealed_frames():
    a_chan, b_chan = ControlChannel(), ControlChannel()
    hello = frame_clear_handshake(b"\x01hello")
    assert b_chan.feed(hello) == [b"\x01hello"]
    confirm = frame_clear_handshake(b"\x03confirm")
    a_chan.install(K1, K2)
    first = a_chan.seal(UdpEndpoint(ipaddress.ip_address("198.18.0.3"), 9443))
    # CONFIRM and the first sealed frame arrive in one read: the channel stops after CONFIRM
    assert b_chan.feed(confirm + first) == [b"\x03confirm"]
    b_chan.install(K2, K1)
    assert b_chan.feed(b"") == [UdpEndpoint(ipaddress.ip_address("198.18.0.3"), 9443)]
    with pytest.raises(ControlError, match="secured"):
        b_chan.feed(frame_clear_handshake(b"\x01again"))


def test_sealed_frame_before_the_handshake_is_refused():
    a = ControlCipher(K1, K2)
    with pytest.raises(ControlError, match="before the handshake"):
        ControlChannel().feed(a.seal(Keepalive(1)))


def test_channel_refuses_to_seal_without_keys_or_install_twice():
    c = ControlChannel()
    with pytest.raises(ControlError):
        c.seal(Keepalive(1))
    c.install(K1, K2)
    with pytest.raises(ControlError):
        c.install(K1, K2)


# --- fuzzing: only ControlError escapes --------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_message_bodies_only_raise_control_error(data):
    try:
        msg = decode_message(data)
    except ControlError:
        return
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_streams_only_raise_control_error(chunks):
    chan = ControlChannel()
    try:
        for c in chunks:
            chan.feed(c)
        chan.install(K1, K2)
        for c in chunks:
            chan.feed(c)
    except ControlError:
        pass


ips = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
)
nets = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: ipaddress.ip_network((ipaddress.IPv4Address(t[0]), t[1]), strict=False)),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
        lambda t: ipaddress.ip_network((ipaddress.IPv6Address(t[0]), t[1]), strict=False)),
)
messages = st.one_of(
    st.builds(UdpEndpoint, ips, st.integers(0, 65535)),
    st.builds(Keepalive, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
    st.builds(Routes, st.integers(0, 2**64 - 1), st.lists(nets, max_size=20).map(tuple)),
    st.builds(Close, st.sampled_from(list(CloseReason)), st.text(max_size=60)),
    st.builds(
        RelayHandshake, st.binary(min_size=20, max_size=20).map(bytes.hex), st.binary(min_size=1, max_size=50)
    ),
    st.builds(Handshake, st.binary(min_size=1, max_size=50)),
)


@settings(max_examples=200)
@given(st.lists(messages, max_size=5))
def test_any_message_sequence_survives_seal_and_open(msgs):
    a, _ = pair()
    stream = b"".join(a.seal(m) for m in msgs)
    chan = ControlChannel()
    chan.install(K2, K1)
    assert chan.feed(stream) == msgs
