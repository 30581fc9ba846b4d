"""Chunk mode through the real data path (tunnel/chunks.py): loopback UDP sockets, socketpairs for
the TUN devices, a hand-driven clock. Negotiation, a super-packet as one chunk and one GSO write,
loss turning it off, every drop counted, and a peer that does not speak chunks."""

import ipaddress
import os
import struct

import pytest

from nodeagent.protocol.chunk import Reassembler, from_tun, pack_super, seal_chunk
from nodeagent.protocol.frames import FrameFlags, FrameType, seal
from nodeagent.tunnel.datapath import DataPath
from tests.nodeagent.tunnel.test_datapath import Node, ipv4_packet, pair, tcp_super_packet


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def start(node: Node, clock: Clock, vnet: bool = True, chunks: bool = True) -> None:
    node.dp = DataPath(node.tun.fileno(), node.udp, list(node.peers.values()), is_hub=False,
                       on_handshake_needed=node.handshakes_wanted.append, vnet=vnet, clock=clock)
    node.dp.chunks.enabled = chunks and vnet


@pytest.fixture
def nodes():
    clock = Clock()
    a, b = Node("a", "10.10.10.1"), Node("b", "10.10.10.2")
    a.know(b)
    b.know(a)
    yield a, b, clock
    for n in (a, b):
        n.udp.close()
        n.tun.close()
        n.tun_app.close()


def traffic(a: Node, b: Node, clock: Clock, rounds: int, per_round: int = 250, step: float = 0.25) -> None:
    """`per_round` small packets a -> b per round, the clock moving `step` each round; both sides drain
    (b's drains run its loss policy and send its control frames; a's drains read the answers)."""
    for _ in range(rounds):
        for _ in range(per_round // 50):
            for _ in range(50):
                a.tun_app.send(bytes(10) + ipv4_packet(a.overlay, b.overlay))  # a vnet TUN: a zero header
            a.dp.on_tun()
            b.dp.on_udp()
            b.delivered()
        clock.t += step
        b.dp.on_udp()
        a.dp.on_udp()
        b.dp.on_udp()  # the acknowledgement


def test_a_clean_path_negotiates_chunks_and_a_super_packet_then_crosses_as_one_chunk(nodes):
    a, b, clock = nodes
    start(a, clock)
    start(b, clock)
    kpa, _kpb = pair(a, b, now=clock.t)
    peer = a.peers["b"]
    # before any grant, a super-packet leaves as one DATA frame per segment
    a.inject(tcp_super_packet(os.urandom(3000), 1000))
    assert peer.stats.tx_frames == 3 and a.dp.chunks.sent == 0
    b.dp.on_udp()
    b.delivered()
    traffic(a, b, clock, rounds=5)  # a baseline, then three clean windows: b asks, a acknowledges
    assert b.dp.chunks.peers[b.peers["a"].id_bytes].signal.acked is True
    assert a.dp.chunks.peers[peer.id_bytes].granted is kpa and a.dp.chunks.granted == 1

    payload = os.urandom(40 * 1000 + 77)
    frame = tcp_super_packet(payload, 1000)
    before = peer.stats.tx_frames
    a.inject(frame)
    assert peer.stats.tx_frames == before + 1 and a.dp.chunks.sent == 1  # one counter for 41 segments
    rx_before = b.peers["a"].stats.rx_frames
    b.dp.on_udp()
    (written,) = b.delivered()
    assert b.dp.chunks.received == 1 and b.peers["a"].stats.rx_frames == rx_before + 1
    # one GSO write: NEEDS_CSUM, GSO_TCPV4, header length, gso_size, checksum start and offset
    assert written[:10] == struct.pack("<BBHHHH", 1, 1, 40, 1000, 20, 16)
    assert written[10:] == frame[10:]
    assert b.dp.drops.as_dict() == dict.fromkeys(b.dp.drops.as_dict(), 0)


def granted(a: Node, b: Node, clock: Clock):
    start(a, clock)
    start(b, clock)
    kpa, kpb = pair(a, b, now=clock.t)
    traffic(a, b, clock, rounds=5)
    assert a.dp.chunks.peers[a.peers["b"].id_bytes].granted is kpa
    return kpa, kpb


def test_a_lost_piece_costs_the_chunk_shows_as_loss_and_turns_chunk_mode_off(nodes):
    a, b, clock = nodes
    granted(a, b, clock)
    pa, pb = a.peers["b"], b.peers["a"]
    b.dp.chunks.peers[pb.id_bytes].policy.min_frames = 2  # a short window: three chunks close one
    sent = []

    class Capture:  # the batches a's data path hands to its UDP socket, kept instead of sent
        def send_batch(self, frames, dest):
            sent.append(list(frames))
            return 0

        def send_gso(self, iov, size, count, dest):  # a chunk: header and body buffers per datagram
            datagrams = [b"".join(iov[i:i + 2]) for i in range(0, 2 * count, 2)]
            assert [len(d) for d in datagrams[:-1]] == [size] * (count - 1) and len(datagrams[-1]) <= size
            sent.append(datagrams)
            return 0

    real, a.dp.udp = a.dp.udp, Capture()
    for _ in range(3):
        a.inject(tcp_super_packet(os.urandom(10_000), 1000))
    a.dp.udp = real
    for i, datagrams in enumerate(sent):
        for j, d in enumerate(datagrams):
            if not (i == 1 and j == 4):  # the fifth piece of the second chunk is lost on the way
                a.udp.sock.sendto(d, b.addr)
    b.dp.on_udp()
    assert len(b.delivered()) == 2 and b.dp.chunks.received == 2
    assert len(b.dp.chunks.reassembler) == 1  # the incomplete one waits ...
    clock.t += 1.5
    b.dp.chunks.tick()
    assert len(b.dp.chunks.reassembler) == 0 and b.dp.chunks.reassembler.expired == 1  # ... not forever
    assert pb.stats.lost_frames == 1  # its counter is a gap, as a lost DATA frame would be
    # the same tick: one gap in three chunks is far above 1 %, so b asks a to stop
    assert b.dp.chunks.peers[pb.id_bytes].policy.on is False
    a.dp.on_udp()  # the revocation
    assert a.dp.chunks.peers[pa.id_bytes].granted is None and a.dp.chunks.granted == 0
    b.dp.on_udp()  # its acknowledgement
    assert b.dp.chunks.peers[pb.id_bytes].signal.acked is False
    before = pa.stats.tx_frames
    a.inject(tcp_super_packet(os.urandom(3000), 1000))
    assert pa.stats.tx_frames == before + 3  # per-segment frames again
    assert b.dp.drops.as_dict() == dict.fromkeys(b.dp.drops.as_dict(), 0)


def _chunk_datagrams(kp, payload=None, src="10.10.10.1", counter=None):
    frame = tcp_super_packet(os.urandom(5000) if payload is None else payload, 1000)
    if src != "10.10.10.1":
        frame = frame[:22] + ipaddress.ip_address(src).packed + frame[26:]
    gso_type, gso_size, _hdr_len = from_tun(frame)
    return seal_chunk(kp.send, kp.remote_index, kp.next_counter() if counter is None else counter, 5,
                      pack_super(gso_type, gso_size, frame), 1054)


def test_replayed_forged_spoofed_and_malformed_chunks_are_dropped_and_counted(nodes):
    a, b, clock = nodes
    kpa, _kpb = granted(a, b, clock)
    drops = b.dp.drops
    first = _chunk_datagrams(kpa)
    for d in first:
        a.udp.sock.sendto(d, b.addr)
    b.dp.on_udp()
    assert len(b.delivered()) == 1
    for d in first:  # the same chunk again: its counter was accepted already
        a.udp.sock.sendto(d, b.addr)
    b.dp.on_udp()
    assert drops.replay == 1 and b.delivered() == []
    forged = _chunk_datagrams(kpa)
    forged[2] = forged[2][:30] + bytes([forged[2][30] ^ 1]) + forged[2][31:]
    for d in forged:
        a.udp.sock.sendto(d, b.addr)
    b.dp.on_udp()
    assert drops.bad_tag == 1
    for d in _chunk_datagrams(kpa, src="10.10.10.9"):  # an inner source that is not a's
        a.udp.sock.sendto(d, b.addr)
    b.dp.on_udp()
    assert drops.spoofed_source == 1
    dup = _chunk_datagrams(kpa)
    for d in [dup[0], dup[0], *dup[1:]]:  # a piece twice: the copy is a replay, the chunk still arrives
        a.udp.sock.sendto(d, b.addr)
    b.dp.on_udp()
    assert drops.replay == 2 and len(b.delivered()) == 1
    bad_piece = bytearray(dup[0])
    bad_piece[21] = 0  # count 0
    a.udp.sock.sendto(bytes(bad_piece), b.addr)
    not_super = seal_chunk(kpa.send, kpa.remote_index, kpa.next_counter(), 5, b"\x00" * 100, 1054)
    a.udp.sock.sendto(not_super[0], b.addr)
    b.dp.on_udp()
    assert drops.malformed == 2 and b.delivered() == []
    assert drops.bad_tag == 1 and drops.spoofed_source == 1 and drops.replay == 2


def test_a_peer_without_chunk_support_is_never_sent_chunks_and_asked_only_a_few_times(nodes):
    a, b, clock = nodes
    start(a, clock)
    start(b, clock)
    pair(a, b, now=clock.t)
    older = []

    def like_an_older_agent(peer, kp, payload, now):  # it refuses flag bit 2: malformed, nothing else
        older.append(payload)
        a.dp.drops.malformed += 1

    a.dp.chunks.on_control = like_an_older_agent
    traffic(a, b, clock, rounds=30)  # 7.5 s of clean traffic: b wants chunks all along
    assert len(older) == 5  # Signal.first_tries, then b stops asking
    assert a.dp.chunks.granted == 0
    before = a.peers["b"].stats.tx_frames
    a.inject(tcp_super_packet(os.urandom(3000), 1000))
    b.dp.on_udp()
    assert a.peers["b"].stats.tx_frames == before + 3 and len(b.delivered()) == 1  # per segment, merged


def test_with_chunks_off_a_node_never_asks_and_refuses_a_grant(nodes):
    a, b, clock = nodes
    start(a, clock, chunks=False)  # SHADOWMESH_CHUNKS=0
    start(b, clock)
    _kpa, kpb = pair(a, b, now=clock.t)
    traffic(a, b, clock, rounds=6)
    # b asked (its side is on); a answered "off", so b knows and stops asking
    signal = b.dp.chunks.peers[b.peers["a"].id_bytes].signal
    assert signal.acked is False and signal.tries == 1
    assert a.dp.chunks.granted == 0
    traffic(b, a, clock, rounds=6)  # and a, receiving, never asks b
    assert b.dp.chunks.granted == 0
    # a chunk that arrives anyway is dropped as malformed, piece by piece
    datagrams = _chunk_datagrams(kpb, src="10.10.10.2")
    for d in datagrams:
        b.udp.sock.sendto(d, a.addr)
    a.dp.on_udp()
    assert a.dp.drops.malformed == len(datagrams) and a.delivered() == []


def test_a_grant_belongs_to_its_keypair_and_a_bad_control_payload_is_malformed(nodes):
    a, b, clock = nodes
    old, _ = granted(a, b, clock)
    pair(a, b, now=clock.t)  # a rekey: new keypairs on both sides
    before = a.peers["b"].stats.tx_frames
    a.inject(tcp_super_packet(os.urandom(3000), 1000))
    assert a.peers["b"].stats.tx_frames == before + 3  # the old grant does not cover the new keys
    b.dp.on_udp()
    b.delivered()
    traffic(a, b, clock, rounds=2)  # b's signal restarts on its new keypair and grants again
    kp_new = a.peers["b"].ring.sending(clock.t)
    assert kp_new is not old and a.dp.chunks.peers[a.peers["b"].id_bytes].granted is kp_new
    bad = seal(kp_new.send, FrameType.KEEPALIVE, kp_new.remote_index, kp_new.next_counter(), 0, b"\x07",
               int(FrameFlags.CHUNK_CONTROL))
    a.udp.sock.sendto(bad, b.addr)
    b.dp.on_udp()
    assert b.dp.drops.malformed == 1


def test_a_gro_batch_of_pieces_takes_the_short_way_with_the_same_checks_and_counters(nodes):
    """One GSO send of equal-sized datagrams arrives as one GRO batch: CHUNK pieces good and bad,
    then a DATA frame, then the last piece of the chunk (which the generic path then takes)."""
    a, b, clock = nodes
    kpa, _kpb = granted(a, b, clock)
    drops = b.dp.drops
    before = drops.as_dict()
    size = 1054  # piece size: every datagram below is 20 + 2 + 1054 bytes
    payload = os.urandom(3 * size - 16 - 3 - 40)  # the sealed unit is exactly three pieces
    frame = tcp_super_packet(payload, 1000)
    gso_type, gso_size, _hdr = from_tun(frame)
    plain = pack_super(gso_type, gso_size, frame)
    good = seal_chunk(kpa.send, kpa.remote_index, kpa.next_counter(), 5, plain, size)
    assert [len(d) for d in good] == [size + 22] * 3

    def altered(d, offset, value):
        x = bytearray(d)
        x[offset] = value
        return bytes(x)

    data = seal(kpa.send, FrameType.DATA, kpa.remote_index, kpa.next_counter(), 5,
                ipv4_packet("10.10.10.1", "10.10.10.2", bytes(size + 22 - 36 - 20)))
    assert len(data) == size + 22
    batch = [good[0], altered(good[1], 1, 0x10),  # unknown flag bit: malformed
             altered(good[1], 1, 0x01),  # a known flag, but CHUNK frames carry none: malformed
             altered(good[1], 4, good[1][4] ^ 0xFF),  # another receiver index: unknown_session
             altered(good[1], 21, 0),  # count 0: malformed
             good[1], good[1],  # the second copy: replay
             data, good[2]]
    seen = []
    real = b.dp.chunks.on_batch

    def spy(view, nbytes, seg, addr, now):
        seen.append((nbytes, seg))
        return real(view, nbytes, seg, addr, now)

    b.dp.chunks.on_batch = spy
    a.udp.sock.sendmsg([b"".join(batch)], [(17, 103, struct.pack("=H", size + 22))], 0, b.addr)
    b.dp.on_udp()
    assert seen == [(len(batch) * (size + 22), size + 22)]  # one GRO batch, through the short way
    after = drops.as_dict()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        "malformed": 3, "unknown_session": 1, "replay": 1}
    written = b.delivered()
    assert len(written) == 2 and written[1][10:] == frame[10:]  # the DATA packet, then the chunk
    assert b.dp.chunks.received == 1


def test_a_chunk_passes_the_access_policy_like_any_data(nodes):
    """Step 9 holds for chunks too: a super-packet the policy refuses is dropped and counted
    `policy` / `denied_frames`, one the rules allow crosses (the policy is asked once per chunk,
    a super-packet being one flow)."""
    from nodeagent.policy.filter import PacketFilter
    from nodeagent.protocol.policy import check_policy, check_rule

    a, b, clock = nodes
    granted(a, b, clock)
    dns_only = check_rule(["10.10.10.1"], ["10.10.10.2"], "udp", [(53, 53)])
    iperf = check_rule(["10.10.10.1"], ["10.10.10.2"], "tcp", [(5201, 5201)])
    b.dp.filter = PacketFilter(check_policy("deny", [dns_only]), now=clock.t)
    received = b.dp.chunks.received
    a.inject(tcp_super_packet(os.urandom(20 * 1000), 1000))
    assert a.dp.chunks.sent == 1
    b.dp.on_udp()
    assert b.delivered() == []
    assert b.dp.drops.policy == 1 and b.peers["a"].stats.denied_frames == 1
    assert b.dp.chunks.received == received

    b.dp.filter = PacketFilter(check_policy("deny", [iperf]), now=clock.t, previous=b.dp.filter)
    frame = tcp_super_packet(os.urandom(20 * 1000), 1000)
    a.inject(frame)
    b.dp.on_udp()
    (written,) = b.delivered()
    assert written[10:] == frame[10:] and b.dp.drops.policy == 1


def test_a_flow_this_node_starts_in_chunk_mode_is_tracked_and_its_replies_come_in(nodes):
    """Outbound step 3 holds for chunks too: a super-packet that leaves as one CHUNK notes its flow
    in the access policy (once per read, as a TSO read does), so what the stateful filter admits
    because this node started the flow comes back in: the peer's replies and an ICMP error about
    the flow (here "fragmentation needed", which only the flow table can vouch for). The policy
    lets only this side start the flow."""
    from nodeagent.policy.filter import PacketFilter
    from nodeagent.protocol.policy import check_policy, check_rule
    from tests.nodeagent.policy.packets import ACK, SYN, icmp_error4, tcp4

    a, b, clock = nodes
    granted(a, b, clock)
    iperf_from_a = check_rule(["10.10.10.1"], ["10.10.10.2"], "tcp", [(5201, 5201)])
    a.dp.filter = PacketFilter(check_policy("deny", [iperf_from_a]), now=clock.t)
    frame = tcp_super_packet(os.urandom(20 * 1000), 1000)  # 10.10.10.1:40000 -> 10.10.10.2:5201
    a.inject(frame)
    assert a.dp.chunks.sent == 1  # it left as one chunk ...
    assert a.dp.filter.status()["flows_tcp"] == 1  # ... and its flow was noted
    b.dp.on_udp()
    assert len(b.delivered()) == 1

    plain = bytes(10)  # b's TUN speaks virtio_net_hdr: a zero header, no offload
    too_big = icmp_error4("10.10.10.2", "10.10.10.1", frame[10:], type_=3, code=4)
    reply = tcp4("10.10.10.2", "10.10.10.1", 5201, 40000, ACK)
    stranger = tcp4("10.10.10.2", "10.10.10.1", 5201, 40001, SYN)  # b may not open a connection to a
    for packet in (too_big, reply, stranger):
        b.inject(plain + packet)
    a.dp.on_udp()
    written = [w[10:] for w in a.delivered()]
    assert written == [too_big, reply]
    assert a.dp.drops.policy == 1 and a.peers["b"].stats.denied_frames == 1  # the stranger only


def test_a_gro_batch_holding_a_run_of_pieces_is_stored_at_once_and_a_repeated_piece_still_counts(nodes):
    """The pieces of one chunk that arrive as equal-sized datagrams of one GRO batch are stored as
    one run (Reassembler.add_run, once), the short last piece on its own; the chunk arrives whole.
    A run that holds a piece already stored goes piece by piece: that piece is a `replay`, the
    chunk still completes; a batch whose headers differ inside the run (another chunk's piece in
    the middle) is taken piece by piece with the same result."""
    a, b, clock = nodes
    kpa, _kpb = granted(a, b, clock)
    size = 1054
    runs, singles = [], []

    class Spy(Reassembler):
        __slots__ = ()

        def add_run(self, *args):
            runs.append(args[4])  # the number of pieces
            return super().add_run(*args)

        def add(self, *args):
            singles.append(args[3])  # the index
            return super().add(*args)

    b.dp.chunks.reassembler = Spy()

    def send(datagrams):
        a.udp.sock.sendmsg([b"".join(datagrams)], [(17, 103, struct.pack("=H", size + 22))], 0, b.addr)
        b.dp.on_udp()

    payload = os.urandom(9 * size - 16 - 3 - 40 + 500)  # nine full pieces and a short tenth
    frame = tcp_super_packet(payload, 1000)
    gso_type, gso_size, _hdr = from_tun(frame)
    plain = pack_super(gso_type, gso_size, frame)
    chunk = seal_chunk(kpa.send, kpa.remote_index, kpa.next_counter(), 5, plain, size)
    assert len(chunk) == 10 and len(chunk[-1]) < size + 22
    send(chunk)
    assert runs == [9] and singles == [9]  # pieces 0-8 as one run, the last alone
    (written,) = b.delivered()
    assert written[10:] == frame[10:] and b.dp.chunks.received == 1

    # piece 4 came first (alone); then the whole chunk in one batch: the run holds piece 4 again
    runs.clear()
    singles.clear()
    plain = pack_super(gso_type, gso_size, frame)
    chunk = seal_chunk(kpa.send, kpa.remote_index, kpa.next_counter(), 5, plain, size)
    a.udp.sock.sendto(chunk[4], b.addr)
    b.dp.on_udp()
    before = b.dp.drops.as_dict()
    send(chunk)
    after = b.dp.drops.as_dict()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {"replay": 1}
    assert runs == [9] and singles == [4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # refused run, then one by one
    (written,) = b.delivered()
    assert written[10:] == frame[10:] and b.dp.chunks.received == 2

    # a piece of another chunk inside the batch: no run is taken, every piece still lands
    runs.clear()
    singles.clear()
    first = seal_chunk(kpa.send, kpa.remote_index, kpa.next_counter(), 5, plain, size)
    second = seal_chunk(kpa.send, kpa.remote_index, kpa.next_counter(), 5, plain, size)
    send([*first[:5], second[0], *first[5:9]])
    send(second[1:9])
    send([first[9]])
    send([second[9]])
    assert runs == [8]  # only second[1:9]: the mixed batch went piece by piece
    assert [w[10:] for w in b.delivered()] == [frame[10:], frame[10:]]
    assert b.dp.chunks.received == 4 and b.dp.drops.as_dict() == after
