"""IPv4 fragmentation of packets that may be fragmented (tunnel/ipfrag.py): every fragment fits
and is a valid IPv4 packet, the fragments reassemble into the packet, and nothing is cut that
must not be."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.tunnel.ipfrag import fragment_v4
from nodeagent.tunnel.tso import checksum

SRC, DST = bytes([10, 10, 10, 1]), bytes([10, 10, 10, 2])


def ipv4(payload: bytes, *, df: bool = False, mf: bool = False, offset: int = 0, ident: int = 0x1234,
         proto: int = 17) -> bytes:
    flags_offset = (0x4000 if df else 0) | (0x2000 if mf else 0) | offset
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_offset, 64, proto,
                                 0, SRC, DST))
    struct.pack_into("!H", head, 10, checksum(head))
    return bytes(head) + payload


def reassemble(fragments: list[bytes]) -> tuple[bytes, int, bool]:
    """(payload, first offset in bytes, MF of the last) from fragments in any order, checking
    that they leave no gap and no overlap."""
    pieces = sorted((struct.unpack_from("!H", f, 6)[0] & 0x1FFF, f) for f in fragments)
    out, at = b"", pieces[0][0] * 8
    start = at
    for off, f in pieces:
        assert off * 8 == at, "a gap or an overlap"
        out += f[20:]
        at += len(f) - 20
    last = pieces[-1][1]
    return out, start, bool(struct.unpack_from("!H", last, 6)[0] & 0x2000)


def check_fragments(packet: bytes, fragments: list[bytes], mtu: int) -> None:
    for i, f in enumerate(fragments):
        assert len(f) <= mtu
        assert checksum(f[:20]) in (0, 0xFFFF)  # a valid header checksum (one of the two zeros)
        assert struct.unpack_from("!H", f, 2)[0] == len(f)
        assert f[:2] == packet[:2] and f[4:6] == packet[4:6] and f[8:10] == packet[8:10]  # id, ttl, proto
        assert f[12:20] == packet[12:20]  # addresses
        assert not struct.unpack_from("!H", f, 6)[0] & 0x4000  # never DF
        if i < len(fragments) - 1:
            assert (len(f) - 20) % 8 == 0 and struct.unpack_from("!H", f, 6)[0] & 0x2000  # MF
    payload, start, more = reassemble(fragments)
    flags_offset = struct.unpack_from("!H", packet, 6)[0]
    assert payload == packet[20:]
    assert start == (flags_offset & 0x1FFF) * 8
    assert more == bool(flags_offset & 0x2000)


def test_a_packet_is_cut_into_fragments_that_fit_and_reassemble():
    packet = ipv4(os.urandom(1380))
    fragments = fragment_v4(packet, 1216)
    assert fragments is not None and [len(f) for f in fragments] == [1212, 20 + 1380 - 1192]
    check_fragments(packet, fragments, 1216)


def test_a_fragment_is_cut_again_with_its_own_offset_and_more_fragments_flag():
    middle = ipv4(os.urandom(1000), mf=True, offset=100)  # a fragment from further back
    fragments = fragment_v4(middle, 500)
    assert fragments is not None and len(fragments) == 3
    check_fragments(middle, fragments, 500)
    last = ipv4(os.urandom(1000), offset=200)  # the last fragment of a packet: MF stays clear
    fragments = fragment_v4(last, 500)
    assert fragments is not None
    check_fragments(last, fragments, 500)


@pytest.mark.parametrize(("packet", "mtu", "why"), [
    (ipv4(os.urandom(1400), df=True), 1216, "DF: answered with ICMP instead"),
    (ipv4(os.urandom(1000)), 1216, "fits"),
    (ipv4(os.urandom(1000)), 1020, "fits exactly"),
    (ipv4(os.urandom(1000)), 27, "no room for 8 bytes of payload"),
    (b"\x46" + ipv4(os.urandom(1400))[1:], 1216, "a header with options"),
    (b"\x60" + os.urandom(1499), 1216, "IPv6"),
    (ipv4(os.urandom(1400))[:1000] + bytes(500), 1216, "lengths that do not agree"),
    (b"\x45" * 19, 10, "shorter than a header"),
    (ipv4(os.urandom(1400), offset=0x1FFF), 1216, "a fragment ending past 65,535 bytes"),
    (b"", 10, "empty"),
])
def test_nothing_is_cut_that_must_not_or_cannot_be(packet, mtu, why):
    assert fragment_v4(packet, mtu) is None, why


def test_the_smallest_useful_limit_makes_8_byte_fragments():
    packet = ipv4(bytes(range(40)))
    fragments = fragment_v4(packet, 28)
    assert fragments is not None and len(fragments) == 5
    check_fragments(packet, fragments, 28)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 4000), mtu=st.integers(28, 1500), mf=st.booleans(), offset=st.integers(0, 4000))
def test_any_packet_and_limit(size, mtu, mf, offset):
    packet = ipv4(os.urandom(size), mf=mf, offset=offset)
    fragments = fragment_v4(packet, mtu)
    if len(packet) <= mtu:
        assert fragments is None
    else:
        assert fragments is not None
        check_fragments(packet, fragments, mtu)
