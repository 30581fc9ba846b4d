"""TCP segmentation of TUN super-packets (tso.py), checked against a naive twin.

The naive checksum below adds 16-bit words one by one with end-around carry (RFC 1071), so it
shares no code or trick with tso.py's big-integer version. Every segment must be a valid packet
on its own once its checksum is finished (partial mode: the field holds the pseudo-header sum),
and segmenting then coalescing (gro.py, as the receiving node does) must give back the original
byte stream.
"""

import ipaddress
import random
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeagent.tunnel.gro import TunWriter
from nodeagent.tunnel.tso import (
    GSO_ECN,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    NEEDS_CSUM,
    VNET_HDR_SIZE,
    OffloadError,
    complete_checksum,
    finish,
    split,
)

CWR, ECE, URG, ACK, PSH, RST, SYN, FIN = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
V4_SRC, V4_DST = ipaddress.ip_address("10.10.10.1").packed, ipaddress.ip_address("10.10.10.2").packed
V6_SRC, V6_DST = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
TIMESTAMPS = bytes([1, 1, 8, 10]) + struct.pack("!II", 123456, 654321)


def naive_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def valid(data: bytes) -> bool:
    """A buffer whose checksum field is filled in sums to all ones."""
    return naive_sum(data) == 0xFFFF


def pseudo_header(packet: bytes) -> bytes:
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        return packet[12:20] + bytes([0, packet[9]]) + struct.pack("!H", len(packet) - ihl)
    return packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, packet[6])


def transport(packet: bytes) -> bytes:
    return packet[(packet[0] & 15) * 4:] if packet[0] >> 4 == 4 else packet[40:]


def tcp_packet(version: int, payload: bytes, *, seq: int = 1000, flags: int = ACK,
               options: bytes = TIMESTAMPS, ip_id: int = 77, ip_options: bytes = b"") -> bytes:
    """A TCP packet as the kernel hands it over with TSO: checksum field left as garbage."""
    doff = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 99, (doff // 4) << 4, flags, 502, 0xBEEF, 0) + options
    if version == 4:
        ihl = 20 + len(ip_options)
        total = ihl + len(tcp) + len(payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, total, ip_id, 0x4000, 64, 6, 0,
                         V4_SRC, V4_DST) + ip_options
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp) + len(payload), 6, 64, V6_SRC, V6_DST)
    return ip + tcp + payload


def vnet(flags: int, gso_type: int, hdr_len: int = 0, gso_size: int = 0, start: int = 0,
         offset: int = 0) -> bytes:
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, start, offset)


def super_packet(version: int, payload: bytes, mss: int, **kw) -> bytes:
    pkt = tcp_packet(version, payload, **kw)
    ihl = (pkt[0] & 15) * 4 if version == 4 else 40
    hl = ihl + (pkt[ihl + 12] >> 4) * 4
    return vnet(NEEDS_CSUM, GSO_TCPV4 if version == 4 else GSO_TCPV6, hl, mss, ihl, 16) + pkt


def header_len(packet: bytes) -> int:
    ihl = (packet[0] & 15) * 4 if packet[0] >> 4 == 4 else 40
    return ihl + (packet[ihl + 12] >> 4) * 4


flag_sets = st.sets(st.sampled_from([CWR, ECE, URG, PSH, FIN])).map(lambda fs: ACK | sum(fs))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([4, 6]), size=st.integers(1, 9000), mss=st.integers(1, 1500),
       flags=flag_sets, seq=st.integers(0, 2**32 - 1), ip_id=st.integers(0, 0xFFFF),
       options=st.sampled_from([b"", TIMESTAMPS, bytes([1, 1, 1, 0])]), complete=st.booleans(),
       data=st.data())
def test_every_segment_is_a_valid_packet_and_together_they_carry_the_payload(
        version, size, mss, flags, seq, ip_id, options, complete, data):
    payload = data.draw(st.binary(min_size=size, max_size=size))
    original = tcp_packet(version, payload, seq=seq, flags=flags, options=options, ip_id=ip_id)
    frame = super_packet(version, payload, mss, seq=seq, flags=flags, options=options, ip_id=ip_id)
    segments, partial = split(frame, complete)
    assert partial is not complete

    assert len(segments) == -(-size // mss)
    hl = header_len(original)
    carried = b""
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        chunk = seg[hl:]
        assert len(chunk) == (size - mss * i if last else mss)
        ihl = hl - len(options) - 20
        field = struct.unpack_from("!H", seg, ihl + 16)[0]
        if partial:  # the pseudo-header sum, as the kernel leaves it for NEEDS_CSUM
            assert field % 0xFFFF == naive_sum(pseudo_header(seg)) % 0xFFFF
            seg = finish(seg)
        assert valid(pseudo_header(seg) + transport(seg))  # TCP checksum, naive twin
        if version == 4:
            assert struct.unpack_from("!H", seg, 2)[0] == len(seg)
            assert struct.unpack_from("!H", seg, 4)[0] == (ip_id + i) & 0xFFFF
            assert valid(seg[:ihl])  # IPv4 header checksum
            assert seg[6:10] == original[6:10] and seg[12:ihl] == original[12:ihl]
        else:
            assert struct.unpack_from("!H", seg, 4)[0] == len(seg) - 40
            assert seg[6:40] == original[6:40]
        tcp, orig_tcp = seg[ihl:hl], original[ihl:hl]
        assert struct.unpack_from("!I", tcp, 4)[0] == (seq + i * mss) & 0xFFFFFFFF
        expected = flags
        if i:
            expected &= ~CWR
        if not last:
            expected &= ~(FIN | PSH)
        assert tcp[13] == expected
        # ports, ack, data offset, window, urgent pointer and options are copied unchanged
        assert tcp[:4] == orig_tcp[:4] and tcp[8:13] == orig_tcp[8:13] and tcp[14:16] == orig_tcp[14:16]
        assert tcp[18:] == orig_tcp[18:]
        carried += chunk
    assert carried == payload


@pytest.fixture
def tun():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    theirs.setblocking(False)
    yield TunWriter(ours.fileno()), theirs
    ours.close()
    theirs.close()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 60000), mss=st.integers(500, 1448), psh=st.booleans(), seed=st.integers(0, 2**32))
def test_segmenting_then_coalescing_gives_back_the_original_stream(tun, size, mss, psh, seed):
    writer, theirs = tun
    payload = random.Random(seed).randbytes(size)
    flags = ACK | (PSH if psh else 0)
    segments, partial = split(super_packet(4, payload, mss, flags=flags))
    for seg in segments:
        writer.add(seg, partial)
    writer.flush()
    written = []
    while True:
        try:
            written.append(theirs.recv(70000))
        except BlockingIOError:
            break
    stream = b""
    for out in written:
        hdr, pkt = out[:VNET_HDR_SIZE], out[VNET_HDR_SIZE:]
        hl = header_len(pkt)
        if hdr[0] & NEEDS_CSUM:  # the field holds the pseudo-header sum; finish it as the kernel does
            assert struct.unpack_from("<HH", hdr, 6) == (20, 16)
            finished = complete_checksum(pkt, 20, 16)
            assert valid(pseudo_header(finished) + transport(finished))
        else:
            assert valid(pseudo_header(pkt) + transport(pkt))
        assert valid(pkt[:20])
        stream += pkt[hl:]
    assert stream == payload
    if size <= mss or size + 52 <= 65000:
        assert len(written) == 1  # one run of one flow becomes a single TUN write
    assert written[-1][VNET_HDR_SIZE + 33] == flags  # PSH survives on the (last) write


def test_an_ecn_super_packet_keeps_cwr_on_the_first_segment_only():
    frame = super_packet(4, bytes(range(256)) * 20, 1000, flags=ACK | CWR | ECE)
    frame = frame[:1] + bytes([GSO_TCPV4 | GSO_ECN]) + frame[2:]
    tcp_flags = [seg[20 + 13] for seg in split(frame)[0]]
    assert len(tcp_flags) == 6
    assert tcp_flags[0] & CWR and not any(f & CWR for f in tcp_flags[1:])
    assert all(f & ECE for f in tcp_flags)


@pytest.mark.parametrize("version", [4, 6])
def test_a_udp_packet_with_a_partial_checksum_is_completed(version):
    body = bytes(range(7, 250)) * 3
    if version == 4:
        udp_len = 8 + len(body)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 1, 0x4000, 64, 17, 0, V4_SRC, V4_DST)
        ip = ip[:10] + struct.pack("!H", ~naive_sum(ip) & 0xFFFF) + ip[12:]
        start = 20
    else:
        udp_len = 8 + len(body)
        ip = struct.pack("!IHBB16s16s", 0x60000000, udp_len, 17, 64, V6_SRC, V6_DST)
        start = 40
    # the kernel leaves the pseudo-header sum (not inverted) in the field
    partial = naive_sum(pseudo_header(ip + bytes(udp_len)))
    packet = ip + struct.pack("!HHHH", 5000, 6000, udp_len, partial) + body
    frame = vnet(NEEDS_CSUM, GSO_NONE, 0, 0, start, 6) + packet
    assert split(frame) == ([packet], True)  # left for the receiving kernel
    ([done], flagged) = split(frame, complete=True)
    assert not flagged and finish(packet) == done
    assert done[:start + 6] == packet[:start + 6] and done[start + 8:] == packet[start + 8:]
    assert valid(pseudo_header(done) + transport(done))


def test_a_packet_without_offload_flags_passes_through_unchanged():
    icmp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, V4_SRC, V4_DST) + bytes(8)
    assert split(vnet(0, GSO_NONE) + icmp) == ([icmp], False)


@pytest.mark.parametrize("frame, why", [
    (b"\x01\x01", "shorter than the vnet header"),
    (vnet(0, 3) + tcp_packet(4, b"x" * 100), "UDP fragmentation offload, never enabled"),
    (vnet(0, GSO_TCPV4, 0, 100) + tcp_packet(6, b"x" * 300), "TCPv4 GSO around an IPv6 packet"),
    (vnet(0, GSO_TCPV4, 0, 0) + tcp_packet(4, b"x" * 300), "zero gso_size"),
    (vnet(0, GSO_TCPV4, 0, 100) + tcp_packet(4, b""), "no payload"),
    (vnet(0, GSO_TCPV4, 0, 100) + tcp_packet(4, b"x" * 300)[:30], "truncated TCP header"),
    (vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 300) + tcp_packet(4, b"x" * 10), "checksum outside the packet"),
])
def test_frames_that_cannot_be_segmented_raise_offload_error(frame, why):
    with pytest.raises(OffloadError):
        split(frame)


@settings(max_examples=500)
@given(header=st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 3, 4, 0x81, 0x84]),
                        st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
                        st.integers(0, 0xFFFF)),
       body=st.binary(max_size=3000))
def test_arbitrary_bytes_raise_only_offload_error(header, body):
    try:
        out, _partial = split(struct.pack("<BBHHHH", *header) + body)
    except OffloadError:
        return
    assert all(isinstance(p, bytes) for p in out)


def test_a_partial_checksum_at_an_unexpected_place_is_completed_not_forwarded():
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, V4_SRC, V4_DST)
    icmp = ip + bytes([8, 0, 0, 0]) + b"ping"
    ([done], partial) = split(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 2) + icmp)
    assert not partial and valid(done[20:])


def test_a_lone_partial_packet_is_written_with_needs_csum_at_its_transport_header(tun):
    writer, theirs = tun
    segments, partial = split(super_packet(6, b"z" * 300, 1000, flags=ACK | PSH))
    writer.add(segments[0], partial)
    writer.flush()
    out = theirs.recv(70000)
    assert struct.unpack_from("<BBHHHH", out) == (NEEDS_CSUM, GSO_NONE, 0, 0, 40, 16)
    assert out[VNET_HDR_SIZE:] == segments[0]


def test_finish_refuses_a_packet_without_a_tcp_or_udp_checksum():
    with pytest.raises(OffloadError):
        finish(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, V4_SRC, V4_DST) + bytes(8))


def test_a_segment_too_long_for_the_ip_length_field_is_refused():
    # a read longer than its IPv4 header says, with a gso_size as large as the field allows
    frame = vnet(NEEDS_CSUM, GSO_TCPV4, 40, 65535, 20, 16) + tcp_packet(4, b"x" * 100, options=b"")
    with pytest.raises(OffloadError):
        split(frame + b"y" * 65500)
