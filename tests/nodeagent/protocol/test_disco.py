"""Path-discovery frames (protocol/disco.py, frames.py types 5-7, keys.DiscoKeys): layouts, strictness,
the ACK-never-larger rule, and sealing under the disco keys."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent.protocol import disco
from nodeagent.protocol.disco import (
    ACK_MAX_PAYLOAD,
    MAX_CANDIDATES,
    PROBE_MIN_PAYLOAD,
    Call,
    CallKind,
    CandidateKind,
    DiscoError,
    NatClass,
    WireCandidate,
)
from nodeagent.protocol.frames import (
    DISCO_TYPES,
    END_TO_END_TYPES,
    FRAME_OVERHEAD,
    BadTag,
    FrameError,
    FrameType,
    open_frame,
    parse_header,
    seal,
    unwrap_relay,
    wrap_relay,
)
from nodeagent.protocol.keys import DISCO_KEY_LABEL, Keypair, NonceExhausted, derive_disco_key

TXID = bytes(range(8))


def test_probe_layout_is_txid_sequence_and_zero_padding():
    p = disco.pack_probe(TXID, 0x01020304, 40)
    assert p == TXID + b"\x01\x02\x03\x04" + bytes(28)
    assert disco.parse_probe(p) == disco.Probe(TXID, 0x01020304, 40)


@pytest.mark.parametrize("size", [PROBE_MIN_PAYLOAD - 1, 12, 0, 65001])
def test_probe_size_is_bounded(size):
    with pytest.raises(DiscoError):
        disco.pack_probe(TXID, 1, size)


def test_a_short_or_nonzero_padded_probe_is_refused():
    with pytest.raises(DiscoError):
        disco.parse_probe(TXID + bytes(4))  # no padding: smaller than any ACK
    with pytest.raises(DiscoError):
        disco.parse_probe(disco.pack_probe(TXID, 1)[:-1] + b"\x01")


@pytest.mark.parametrize("observed", [None, ("198.18.0.10", 9443), ("2001:db8::1", 65535)])
def test_ack_round_trips_and_is_never_larger_than_the_smallest_probe(observed):
    a = disco.pack_ack(TXID, 7, observed)
    assert disco.parse_ack(a) == disco.Ack(TXID, 7, observed)
    assert len(a) <= ACK_MAX_PAYLOAD < PROBE_MIN_PAYLOAD
    assert disco.ack_fits(PROBE_MIN_PAYLOAD, a)
    assert not disco.ack_fits(len(a) - 1, a)


def test_ack_layout():
    a = disco.pack_ack(TXID, 1, ("198.18.0.10", 9443))
    assert a == TXID + struct.pack("!I", 1) + bytes([4, 198, 18, 0, 10]) + struct.pack("!H", 9443)
    assert disco.pack_ack(TXID, 1, None) == TXID + struct.pack("!I", 1) + b"\x00"


@pytest.mark.parametrize(
    "bad",
    [
        TXID + struct.pack("!I", 1) + b"\x05" + bytes(6),  # ip version 5
        TXID + struct.pack("!I", 1) + bytes([4, 1, 2, 3, 4, 0, 0]),  # port 0
        TXID + struct.pack("!I", 1) + b"\x00\x00",  # trailing byte
        TXID + struct.pack("!I", 1),  # no address byte
    ],
)
def test_malformed_acks_are_refused(bad):
    with pytest.raises(DiscoError):
        disco.parse_ack(bad)


def call(kind=CallKind.OFFER, n=2, nat=NatClass.EASY):
    cands = tuple(
        WireCandidate(CandidateKind.LOCAL if i % 2 else CandidateKind.REFLEXIVE, f"198.18.{i}.1", 9443 + i)
        for i in range(n)
    )
    return Call(kind, TXID, nat, cands)


@pytest.mark.parametrize("kind", list(CallKind))
@pytest.mark.parametrize("n", [0, 1, MAX_CANDIDATES])
def test_call_round_trips(kind, n):
    c = call(kind, n)
    assert disco.parse_call(disco.pack_call(c)) == c


def test_call_layout():
    c = Call(
        CallKind.ANSWER, TXID, NatClass.HARD, (WireCandidate(CandidateKind.OBSERVED, "198.18.0.9", 9443),)
    )
    assert disco.pack_call(c) == (
        b"\x02" + TXID + b"\x03\x01" + b"\x02\x04" + bytes([198, 18, 0, 9]) + struct.pack("!H", 9443)
    )


def test_more_than_16_candidates_are_refused_both_ways():
    with pytest.raises(DiscoError):
        disco.pack_call(call(n=MAX_CANDIDATES + 1))
    raw = bytearray(disco.pack_call(call(n=MAX_CANDIDATES)))
    raw[10] = MAX_CANDIDATES + 1
    with pytest.raises(DiscoError):
        disco.parse_call(bytes(raw))


@pytest.mark.parametrize("offset,value", [(0, 9), (9, 7), (11, 0), (12, 5)])
def test_unknown_codes_in_a_call_are_refused(offset, value):
    raw = bytearray(disco.pack_call(call(n=1)))
    raw[offset] = value
    with pytest.raises(DiscoError):
        disco.parse_call(bytes(raw))


@given(st.binary(max_size=400))
def test_random_bytes_only_raise_disco_error(data):
    for parse in (disco.parse_probe, disco.parse_ack, disco.parse_call):
        try:
            parse(data)
        except DiscoError:
            pass


@given(st.binary(min_size=1, max_size=60), st.integers(0, 340), st.integers(0, 255))
def test_mutated_calls_only_raise_disco_error(junk, at, byte):
    raw = bytearray(disco.pack_call(call(n=MAX_CANDIDATES)))
    raw[at % len(raw)] = byte
    for data in (bytes(raw), bytes(raw) + junk, bytes(raw[: at % len(raw)])):
        try:
            disco.parse_call(data)
        except DiscoError:
            pass


# --- the frames that carry them ---------------------------------------------------------------


def keypairs():
    a = Keypair(b"\x01" * 32, b"\x02" * 32, local_index=1, remote_index=2, created_at=0, initiator=True)
    b = Keypair(b"\x02" * 32, b"\x01" * 32, local_index=2, remote_index=1, created_at=0, initiator=False)
    return a, b


def test_disco_frames_are_end_to_end_types_that_a_hub_relays():
    assert DISCO_TYPES == {FrameType.PROBE, FrameType.PROBE_ACK, FrameType.CALL}
    assert DISCO_TYPES <= END_TO_END_TYPES
    a, _b = keypairs()
    hub = Keypair(b"\x03" * 32, b"\x04" * 32, local_index=5, remote_index=6, created_at=0, initiator=True)
    inner = seal(
        a.disco.send, FrameType.PROBE, a.remote_index, a.disco.next_counter(), 0, disco.pack_probe(TXID, 1)
    )
    env = wrap_relay(hub.send, FrameType.RELAY, 6, hub.next_counter(), 0, b"\x09" * 20, inner)
    hub_rx = Keypair(b"\x04" * 32, b"\x03" * 32, local_index=6, remote_index=5, created_at=0, initiator=False)
    _pid, ih, body = unwrap_relay(hub_rx.recv, parse_header(env), env)
    assert ih.type == FrameType.PROBE and bytes(body) == inner


def test_a_probe_is_sealed_under_the_disco_keys_not_the_data_keys():
    a, b = keypairs()
    assert derive_disco_key(b"\x01" * 32) != b"\x01" * 32
    assert DISCO_KEY_LABEL == b"shadowmesh/disco/v1"
    frame = seal(a.disco.send, FrameType.PROBE, 2, a.disco.next_counter(), 0, disco.pack_probe(TXID, 1))
    h = parse_header(frame)
    assert h.length == PROBE_MIN_PAYLOAD + 16
    assert disco.parse_probe(open_frame(b.disco.recv, h, frame)).sequence == 1
    with pytest.raises(BadTag):
        open_frame(b.recv, h, frame)  # the data key does not open it
    assert a.sent == 0  # no data counter was used: the peer's loss count is untouched


def test_disco_counters_have_their_own_replay_window_and_are_wiped_with_the_keypair():
    a, b = keypairs()
    c0, c1 = a.disco.next_counter(), a.disco.next_counter()
    assert (c0, c1) == (0, 1)
    assert b.disco.accept(c1) and b.disco.accept(c0)
    assert not b.disco.accept(c1)  # a replayed probe is refused
    assert b.accept(c1)  # the data window is another one
    a.wipe()
    assert a.disco.send is None
    with pytest.raises(NonceExhausted):
        a.disco.next_counter()


def test_an_ack_frame_is_never_larger_than_the_probe_frame_it_answers():
    a, b = keypairs()
    probe = seal(a.disco.send, FrameType.PROBE, 2, a.disco.next_counter(), 0, disco.pack_probe(TXID, 1))
    ack = seal(
        b.disco.send,
        FrameType.PROBE_ACK,
        1,
        b.disco.next_counter(),
        0,
        disco.pack_ack(TXID, 1, ("2001:db8::ffff", 65535)),
    )
    assert len(ack) < len(probe) == FRAME_OVERHEAD + PROBE_MIN_PAYLOAD


def test_a_disco_frame_needs_only_a_tag_after_the_header():
    frame = bytes([FrameType.CALL, 0]) + struct.pack("!HIQI", 16, 1, 0, 0) + bytes(16)
    assert parse_header(frame).type == FrameType.CALL
    with pytest.raises(FrameError):
        parse_header(frame[:-1])
