"""Data-frame codec: round trips, strict header parsing, tamper detection, relay envelopes."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol import frames
from nodeagent.protocol.frames import (
    FRAME_OVERHEAD,
    HEADER_SIZE,
    RELAY_OVERHEAD,
    TAG_SIZE,
    BadTag,
    FrameError,
    FrameFlags,
    FrameType,
    Header,
    open_frame,
    parse_header,
    seal,
    unwrap_relay,
    wrap_relay,
)

KEY = bytes(range(32))
AEAD = ChaCha20Poly1305(KEY)
OTHER = ChaCha20Poly1305(bytes(32))


def raw_header(ftype=1, flags=0, length=TAG_SIZE, index=7, counter=9, ts=11):
    return struct.pack("!BBHIQI", ftype, flags, length, index, counter, ts)


def test_header_is_twenty_bytes_and_overheads_add_up():
    assert HEADER_SIZE == 20
    assert FRAME_OVERHEAD == 36
    assert RELAY_OVERHEAD == 92


@pytest.mark.parametrize("payload", [b"", b"x", os.urandom(1400), bytes(65535 - TAG_SIZE)])
def test_sealed_frame_opens_to_the_same_payload(payload):
    dgram = seal(AEAD, FrameType.DATA, 0xDEADBEEF, 2**64 - 1, 0xFFFFFFFF, payload)
    h = parse_header(dgram)
    assert h == Header(FrameType.DATA, 0, len(payload) + TAG_SIZE, 0xDEADBEEF, 2**64 - 1, 0xFFFFFFFF)
    assert open_frame(AEAD, h, dgram) == payload


def test_open_accepts_memoryview_and_bytearray():
    dgram = seal(AEAD, FrameType.KEEPALIVE, 1, 2, 3, b"", flags=FrameFlags.ECHO_REQUEST)
    for view in (memoryview(dgram), bytearray(dgram)):
        h = parse_header(view)
        assert h.flags == FrameFlags.ECHO_REQUEST
        assert open_frame(AEAD, h, view) == b""


def test_nonce_is_four_zero_bytes_then_little_endian_counter():
    assert frames.nonce(1) == b"\0\0\0\0\x01" + bytes(7)
    assert frames.nonce(2**64 - 1) == bytes(4) + b"\xff" * 8


def test_frame_sealed_under_one_counter_does_not_open_under_another():
    dgram = bytearray(seal(AEAD, FrameType.DATA, 1, 5, 0, b"hello"))
    dgram[8:16] = (6).to_bytes(8, "big")
    with pytest.raises(BadTag):
        open_frame(AEAD, parse_header(dgram), dgram)


# Numbered table of malformed datagrams: (case, datagram, reason fragment)
MALFORMED = [
    (1, b"", "shorter"),
    (2, raw_header()[:19], "shorter"),
    (3, raw_header(ftype=0) + bytes(16), "unknown frame type"),
    (4, raw_header(ftype=9) + bytes(16), "unknown frame type"),  # the first unassigned type (8 is CHUNK)
    (5, raw_header(ftype=255) + bytes(16), "unknown frame type"),
    (6, raw_header(flags=8) + bytes(16), "flag"),  # the first unassigned bit (4 is CHUNK_CONTROL)
    (7, raw_header(flags=0x80) + bytes(16), "flag"),
    (8, raw_header(length=17) + bytes(16), "length"),
    (9, raw_header(length=15) + bytes(16), "length"),
    (10, raw_header(length=15) + bytes(15), "shorter than a tag"),
    (11, raw_header(length=0), "tag"),
    (12, raw_header(ftype=3, length=36 + 35) + bytes(71), "too short for its type"),
    (13, raw_header(ftype=4, length=0), "shorter than a tag"),
    (14, raw_header(length=16) + bytes(17), "length"),
    (15, raw_header(ftype=8, length=2) + bytes(2), "without a piece"),  # CHUNK: index, count, no piece
]


@pytest.mark.parametrize(("case", "datagram", "reason"), MALFORMED, ids=[f"case{c}" for c, _, _ in MALFORMED])
def test_malformed_datagram_is_refused_with_frame_error(case, datagram, reason):
    with pytest.raises(FrameError, match=reason):
        parse_header(datagram)


def test_flipping_any_bit_of_a_frame_makes_it_fail():
    dgram = seal(AEAD, FrameType.DATA, 42, 1000, 77, b"some payload bytes")
    for i in range(len(dgram)):
        for bit in (0x01, 0x80):
            bad = bytearray(dgram)
            bad[i] ^= bit
            with pytest.raises(FrameError):  # BadTag is a FrameError
                open_frame(AEAD, parse_header(bad), bad)


def test_flipped_tag_or_header_field_is_a_bad_tag_not_a_parse_error():
    dgram = seal(AEAD, FrameType.DATA, 42, 1000, 77, b"payload")
    for offset in (4, 8, 15, 16, 19, HEADER_SIZE, len(dgram) - 1):
        bad = bytearray(dgram)
        bad[offset] ^= 1
        with pytest.raises(BadTag):
            open_frame(AEAD, parse_header(bad), bad)


def test_frame_does_not_open_under_another_key():
    dgram = seal(AEAD, FrameType.DATA, 1, 1, 1, b"x")
    with pytest.raises(BadTag):
        open_frame(OTHER, parse_header(dgram), dgram)


def test_type_change_keepalive_to_data_is_detected():
    dgram = bytearray(seal(AEAD, FrameType.KEEPALIVE, 1, 1, 1, b""))
    dgram[0] = FrameType.DATA
    with pytest.raises(BadTag):
        open_frame(AEAD, parse_header(dgram), dgram)


@pytest.mark.parametrize(
    ("args", "what"),
    [
        ((FrameType.DATA, 2**32, 0, 0), "index"),
        ((FrameType.DATA, 0, 2**64, 0), "counter"),
        ((FrameType.DATA, 0, 0, 2**32), "timestamp"),
        ((FrameType.DATA, -1, 0, 0), "index"),
        ((256, 0, 0, 0), "type"),
    ],
)
def test_out_of_range_header_values_are_refused_when_sealing(args, what):
    with pytest.raises(FrameError):
        seal(AEAD, *args, b"")


def test_payload_too_long_for_the_length_field_is_refused():
    with pytest.raises(FrameError):
        seal(AEAD, FrameType.DATA, 0, 0, 0, bytes(65535 - TAG_SIZE + 1))


def test_echo_round_trips_and_plain_keepalive_has_none():
    assert frames.parse_echo(frames.pack_echo(0xFFFFFFFF, 12)) == (0xFFFFFFFF, 12)
    assert frames.parse_echo(b"") is None
    with pytest.raises(FrameError):
        frames.parse_echo(b"1234567")


def test_timestamp_difference_survives_wraparound():
    assert frames.ts_ms(1.5) == 1500
    assert frames.ts_ms(2**32 / 1000 + 0.001) == 1
    assert frames.ts_diff(5, 0xFFFFFFFF - 4) == 10
    assert frames.ts_diff(0xFFFFFFFF - 4, 5) == -10


# --- relay envelopes -------------------------------------------------------------------------

SRC = bytes.fromhex("11" * 20)
DST = bytes.fromhex("22" * 20)
E2E = ChaCha20Poly1305(os.urandom(32))  # source <-> destination, unknown to the hub
S_HUB = ChaCha20Poly1305(os.urandom(32))  # source <-> hub
HUB_D = ChaCha20Poly1305(os.urandom(32))  # hub <-> destination


class CountingAEAD:
    """Wraps an AEAD and counts decrypt calls, to prove which keys a party used."""

    def __init__(self, aead):
        self.aead = aead
        self.decrypts = 0

    def encrypt(self, *a):
        return self.aead.encrypt(*a)

    def decrypt(self, *a):
        self.decrypts += 1
        return self.aead.decrypt(*a)


def relay_through_hub(payload: bytes):
    inner = seal(E2E, FrameType.DATA, 0x0D57, 3, 100, payload)
    to_hub = wrap_relay(S_HUB, FrameType.RELAY, 0x4B, 9, 101, DST, inner)
    hub_key = CountingAEAD(S_HUB)
    h = parse_header(to_hub)
    dest, inner_h, inner_view = unwrap_relay(hub_key, h, to_hub)
    assert hub_key.decrypts == 1  # only the hop tag
    forwarded = wrap_relay(HUB_D, FrameType.RELAYED, 0x77, 4, 102, SRC, inner_view)
    return dest, inner_h, inner, forwarded


def test_relayed_frame_reaches_destination_end_to_end_encrypted():
    dest, inner_h, inner, forwarded = relay_through_hub(b"ip packet")
    assert dest == DST
    assert inner_h.receiver_index == 0x0D57
    assert payload_not_visible(b"ip packet", forwarded)
    h = parse_header(forwarded)
    assert h.type == FrameType.RELAYED and h.receiver_index == 0x77
    src, ih, iv = unwrap_relay(HUB_D, h, forwarded)
    assert src == SRC
    assert bytes(iv) == inner
    assert open_frame(E2E, ih, iv) == b"ip packet"


def payload_not_visible(payload, datagram):
    return payload not in datagram


def test_hub_key_cannot_open_the_inner_frame():
    _, inner_h, inner, _ = relay_through_hub(b"secret")
    for key in (S_HUB, HUB_D):
        with pytest.raises(BadTag):
            open_frame(key, inner_h, inner)


def test_byte_altered_by_the_hub_in_the_inner_frame_is_caught_by_the_destination():
    _, _, inner, _ = relay_through_hub(b"secret")
    bad_inner = bytearray(inner)
    bad_inner[-1] ^= 1
    forwarded = wrap_relay(HUB_D, FrameType.RELAYED, 0x77, 5, 0, SRC, bad_inner)
    _src, ih, iv = unwrap_relay(HUB_D, parse_header(forwarded), forwarded)
    with pytest.raises(BadTag):
        open_frame(E2E, ih, iv)


def test_any_flipped_bit_of_a_relay_envelope_fails_the_hop_check():
    inner = seal(E2E, FrameType.DATA, 1, 1, 1, b"abc")
    env = wrap_relay(S_HUB, FrameType.RELAY, 2, 2, 2, DST, inner)
    for i in range(len(env)):
        bad = bytearray(env)
        bad[i] ^= 0x04
        with pytest.raises(FrameError):
            unwrap_relay(S_HUB, parse_header(bad), bad)


def test_destination_peer_id_is_encrypted_on_the_wire():
    inner = seal(E2E, FrameType.DATA, 1, 1, 1, b"abc")
    env = wrap_relay(S_HUB, FrameType.RELAY, 2, 2, 2, DST, inner)
    assert DST not in env


def test_relay_envelopes_do_not_nest():
    inner = seal(E2E, FrameType.DATA, 1, 1, 1, b"abc")
    once = wrap_relay(S_HUB, FrameType.RELAY, 2, 2, 2, DST, inner)
    twice = wrap_relay(S_HUB, FrameType.RELAY, 2, 3, 2, DST, once)
    with pytest.raises(FrameError, match="nest"):
        unwrap_relay(S_HUB, parse_header(twice), twice)


@pytest.mark.parametrize(
    ("ftype", "peer", "inner"),
    [
        (FrameType.DATA, DST, bytes(36)),
        (FrameType.RELAY, DST[:19], bytes(36)),
        (FrameType.RELAY, DST, bytes(35)),
        (FrameType.RELAY, DST, bytes(65535)),
    ],
)
def test_bad_wrap_arguments_are_refused(ftype, peer, inner):
    with pytest.raises(FrameError):
        wrap_relay(S_HUB, ftype, 1, 1, 1, peer, inner)


def test_unwrap_refuses_a_plain_data_frame():
    d = seal(S_HUB, FrameType.DATA, 1, 1, 1, bytes(80))
    with pytest.raises(FrameError):
        unwrap_relay(S_HUB, parse_header(d), d)


# --- fuzzing: only FrameError escapes ---------------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=20))
def test_random_keepalive_payloads_only_raise_frame_error(data):
    try:
        echo = frames.parse_echo(data)
    except FrameError:
        return
    assert echo is None or frames.parse_echo(frames.pack_echo(*echo)) == echo


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_frame_error(data):
    try:
        h = parse_header(data)
    except FrameError:
        return
    for fn in (open_frame, unwrap_relay):
        try:
            fn(AEAD, h, data)
        except FrameError:
            pass


@settings(max_examples=200)
@given(
    st.sampled_from([FrameType.DATA, FrameType.KEEPALIVE]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
    st.sampled_from([0, 1, 2, 3]),
)
def test_parse_of_sealed_frame_gives_back_every_field(ftype, index, counter, ts, payload, flags):
    d = seal(AEAD, ftype, index, counter, ts, payload, flags=flags)
    h = parse_header(d)
    assert h == (ftype, flags, len(payload) + TAG_SIZE, index, counter, ts)
    assert open_frame(AEAD, h, d) == payload


@settings(max_examples=200)
@given(st.binary(min_size=HEADER_SIZE, max_size=120), st.integers(0, 119), st.integers(0, 255))
def test_mutated_valid_datagrams_only_raise_frame_error(prefix, pos, value):
    inner = seal(E2E, FrameType.DATA, 1, 1, 1, prefix)
    env = bytearray(wrap_relay(S_HUB, FrameType.RELAY, 2, 2, 2, DST, inner))
    env[pos % len(env)] = value
    try:
        h = parse_header(env)
        unwrap_relay(S_HUB, h, env)
    except FrameError:
        pass
