"""Userspace GRO on the TUN write side: what gets merged, what is written as it came."""

import socket
import struct

import pytest

from nodeagent.tunnel.gro import VNET_HDR_SIZE, TunWriter

SRC, DST = bytes([10, 10, 10, 1]), bytes([10, 10, 10, 2])


def ip_checksum_ok(header: bytes) -> bool:
    return int.from_bytes(header, "big") % 0xFFFF == 0  # the ones-complement sum is all ones


def segment(seq: int, payload: bytes, flags: int = 0x10, ack: int = 1000, sport: int = 40000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, 5001, seq, ack, 5 << 4, flags, 512, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 7, 0x4000, 64, 6, 0, SRC, DST))
    ip[10:12] = (~(int.from_bytes(ip, "big") % 0xFFFF) & 0xFFFF).to_bytes(2, "big")
    return bytes(ip) + tcp + payload


@pytest.fixture
def tun():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setblocking(False)
    writer = TunWriter(ours.fileno())

    def written():
        out = []
        while True:
            try:
                out.append(theirs.recv(70000))
            except BlockingIOError:
                return out

    yield writer, written
    ours.close()
    theirs.close()


def test_in_order_segments_of_one_flow_become_one_gso_write(tun):
    writer, written = tun
    for i in range(3):
        writer.add(segment(100 + i * 1000, bytes([i]) * 1000))
    writer.flush()
    (out,) = written()
    flags, gso_type, hdr_len, gso_size, csum_start, csum_off = struct.unpack_from("<BBHHHH", out)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_off) == (1, 1, 40, 1000, 20, 16)
    pkt = out[VNET_HDR_SIZE:]
    assert struct.unpack_from("!H", pkt, 2)[0] == len(pkt) == 40 + 3000
    assert ip_checksum_ok(pkt[:20])
    assert pkt[40:] == b"\0" * 1000 + b"\1" * 1000 + b"\2" * 1000
    assert writer.merged == 3 and writer.writes == 1


def test_a_gap_in_sequence_numbers_starts_a_new_run(tun):
    writer, written = tun
    writer.add(segment(100, b"a" * 500))
    writer.add(segment(2000, b"b" * 500))  # not 600: a segment is missing
    writer.flush()
    outs = written()
    assert len(outs) == 2
    assert all(o[:VNET_HDR_SIZE] == bytes(VNET_HDR_SIZE) for o in outs)  # both written as they came


def test_non_tcp_and_control_segments_are_written_unchanged(tun):
    writer, written = tun
    udp = bytearray(segment(1, b"x" * 10))
    udp[9] = 17
    syn = segment(1, b"y" * 10, flags=0x02)
    writer.add(bytes(udp))
    writer.add(syn)
    writer.flush()
    assert [o[VNET_HDR_SIZE:] for o in written()] == [bytes(udp), syn]


def test_a_push_closes_the_run_and_is_kept_on_the_merged_header(tun):
    writer, written = tun
    writer.add(segment(0, b"a" * 100))
    writer.add(segment(100, b"b" * 100, flags=0x18))
    writer.add(segment(200, b"c" * 100))
    writer.flush()
    first, second = written()
    assert first[VNET_HDR_SIZE + 33] & 0x08 and len(first) == VNET_HDR_SIZE + 40 + 200
    assert second[VNET_HDR_SIZE:] == segment(200, b"c" * 100)


def test_different_flows_are_never_merged(tun):
    writer, written = tun
    writer.add(segment(0, b"a" * 100, sport=1))
    writer.add(segment(100, b"b" * 100, sport=2))
    writer.flush()
    assert len(written()) == 2
