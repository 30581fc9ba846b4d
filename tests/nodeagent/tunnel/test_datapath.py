"""The data path on real sockets, with socketpairs standing in for TUN devices (no root needed).

Three nodes on loopback: A and B have a direct session; A reaches C through hub H, and H holds
no A<->C keys. Each test drives the drain callbacks by hand, so nothing depends on timing.
"""

import contextlib
import ipaddress
import os
import secrets
import socket
import struct
import time

import pytest

from nodeagent.config import PeerConfig
from nodeagent.protocol.frames import HEADER_SIZE, FrameType, seal
from nodeagent.protocol.keys import Keypair
from nodeagent.tunnel.datapath import TOO_BIG_RATE, DataPath, Peer
from nodeagent.tunnel.udp import UdpSocket


def ipv4_packet(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    total = 20 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0,
                         ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return header + payload


class Node:
    def __init__(self, name: str, overlay: str, is_hub: bool = False):
        self.name = name
        self.overlay = overlay
        self.id = secrets.token_hex(20)
        self.udp = UdpSocket.open("127.0.0.1", 0)
        self.tun_app, self.tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tun.setblocking(False)
        self.tun_app.setblocking(False)
        self.is_hub = is_hub
        self.handshakes_wanted = []
        self.dp: DataPath | None = None
        self.peers: dict[str, Peer] = {}

    @property
    def addr(self):
        return ("127.0.0.1", self.udp.port)

    def know(self, *others, via=None, allowed=()):
        for o in others:
            cfg = PeerConfig(b"", o.id, ipaddress.ip_address(o.overlay), o.name,
                             allowed_ips=tuple(ipaddress.ip_network(a) for a in allowed))
            self.peers[o.name] = Peer(cfg, relay_rate=1000)

    def start(self, vnet: bool = False):
        self.dp = DataPath(self.tun.fileno(), self.udp, list(self.peers.values()), is_hub=self.is_hub,
                           on_handshake_needed=self.handshakes_wanted.append, vnet=vnet)

    def inject(self, packet: bytes):
        """The kernel routes `packet` into our TUN."""
        self.tun_app.send(packet)
        self.dp.on_tun()

    def delivered(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.tun_app.recv(65536))
            except BlockingIOError:
                return out


def pair(a: Node, b: Node, now: float | None = None):
    """Install a fresh keypair between a and b (what the handshake yields)."""
    now = time.monotonic() if now is None else now
    k1, k2 = os.urandom(32), os.urandom(32)
    ia, ib = secrets.randbits(32), secrets.randbits(32)
    kpa = Keypair(k1, k2, local_index=ia, remote_index=ib, created_at=now, initiator=True)
    kpb = Keypair(k2, k1, local_index=ib, remote_index=ia, created_at=now, initiator=False)
    pa, pb = a.peers[b.name], b.peers[a.name]
    pa.endpoint, pb.endpoint = b.addr, a.addr
    b.dp.install(pb, kpb, confirmed=True)
    a.dp.install(pa, kpa, confirmed=True)
    return kpa, kpb


@contextlib.contextmanager
def linked(*, vnet_a: bool = False, vnet_b: bool = False, allowed=(), paired: bool = True):
    """a (10.10.10.1) and b (10.10.10.2) that know each other (a also routes the prefixes
    `allowed` to b), started, with keys installed unless `paired` is False; their sockets are
    closed on the way out, also when the test fails."""
    a, b = Node("a", "10.10.10.1"), Node("b", "10.10.10.2")
    try:
        a.know(b, allowed=allowed)
        b.know(a)
        a.start(vnet=vnet_a)
        b.start(vnet=vnet_b)
        if paired:
            pair(a, b)
        yield a, b
    finally:
        for n in (a, b):
            n.udp.close()
            n.tun.close()
            n.tun_app.close()


@pytest.fixture
def mesh():
    with linked(allowed=["192.168.2.0/24"]) as nodes:
        yield nodes


def test_a_packet_crosses_and_is_counted_on_both_sides(mesh):
    a, b = mesh
    pkt = ipv4_packet("10.10.10.1", "10.10.10.2")
    a.inject(pkt)
    b.dp.on_udp()
    assert b.delivered() == [pkt]
    assert a.peers["b"].stats.tx_frames == 1 and b.peers["a"].stats.rx_frames == 1


def test_a_packet_for_a_routed_prefix_goes_to_that_peer(mesh):
    a, b = mesh
    a.inject(ipv4_packet("10.10.10.1", "192.168.2.77"))
    b.dp.on_udp()
    assert len(b.delivered()) == 1


def test_a_packet_with_no_route_is_dropped_and_counted(mesh):
    a, _b = mesh
    a.inject(ipv4_packet("10.10.10.1", "10.10.10.99"))
    assert a.dp.drops.no_route == 1


def test_an_inner_source_that_is_not_the_peers_is_dropped_as_spoofed(mesh):
    a, b = mesh
    a.inject(ipv4_packet("10.10.10.7", "10.10.10.2"))
    b.dp.on_udp()
    assert b.delivered() == [] and b.dp.drops.spoofed_source == 1


def test_garbage_truncated_bitflipped_and_replayed_frames_are_dropped_and_counted(mesh):
    a, b = mesh
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    attacker.setblocking(False)
    # a genuine frame, captured by pointing a at the attacker's socket once
    a.peers["b"].endpoint = attacker.getsockname()
    a.inject(ipv4_packet("10.10.10.1", "10.10.10.2"))
    genuine = attacker.recv(65536)
    a.peers["b"].endpoint = b.addr
    flipped = bytearray(genuine)
    flipped[-20] ^= 1
    unknown = bytearray(genuine)
    unknown[4:8] = (int.from_bytes(genuine[4:8], "big") ^ 1).to_bytes(4, "big")
    a.udp.sendto(genuine, b.addr)  # the real frame arrives from a first
    for d in (os.urandom(7), os.urandom(300), genuine[:HEADER_SIZE + 3], bytes(flipped), bytes(unknown),
              genuine, genuine):
        attacker.sendto(d, b.addr)
    b.dp.on_udp()
    drops = b.dp.drops
    assert (drops.malformed, drops.bad_tag, drops.unknown_session, drops.replay) == (3, 1, 1, 2)
    assert len(b.delivered()) == 1  # the genuine one, once
    assert b.peers["a"].stats.bad_frames == 1 and b.peers["a"].stats.replayed_frames == 2
    with pytest.raises(BlockingIOError):
        attacker.recv(65536)  # nothing was sent back
    assert b.peers["a"].endpoint == a.addr  # unauthenticated input never moved the endpoint


def test_an_authenticated_frame_from_a_new_address_moves_the_endpoint(mesh):
    a, b = mesh
    new_sock = UdpSocket.open("127.0.0.1", 0)
    old_udp, a.dp.udp = a.dp.udp, new_sock
    a.inject(ipv4_packet("10.10.10.1", "10.10.10.2"))
    b.dp.on_udp()
    assert b.peers["a"].endpoint == ("127.0.0.1", new_sock.port)
    a.dp.udp = old_udp
    new_sock.close()


def test_a_packet_without_a_session_waits_and_asks_for_a_handshake():
    with linked(paired=False) as (a, b):
        pkt = ipv4_packet("10.10.10.1", "10.10.10.2")
        a.inject(pkt)
        assert a.handshakes_wanted == [a.peers["b"]]
        pair(a, b)  # the handshake completes: the parked packet goes out
        b.dp.on_udp()
        assert b.delivered() == [pkt]


def test_an_echo_keepalive_gives_an_rtt(mesh):
    a, b = mesh
    assert a.dp.send_keepalive(a.peers["b"])
    b.dp.on_udp()
    a.dp.on_udp()
    assert a.peers["b"].stats.rtt_ms is not None and a.peers["b"].stats.rtt_ms >= 0


def test_lost_frames_count_gaps_in_counters(mesh):
    a, b = mesh
    kp = a.peers["b"].ring.current
    for _ in range(3):
        kp.next_counter()  # three frames "lost on the wire"
    a.inject(ipv4_packet("10.10.10.1", "10.10.10.2"))
    b.dp.on_udp()
    assert b.peers["a"].stats.lost_frames == 3


def test_a_hub_forwards_frames_it_cannot_open():
    a, h, c = Node("a", "10.10.10.1"), Node("h", "10.10.10.3", is_hub=True), Node("c", "10.10.10.2")
    a.know(h, c)
    c.know(h, a)
    h.know(a, c)
    for n in (a, h, c):
        n.start()
    a.peers["c"].hub = a.peers["h"]
    c.peers["a"].hub = c.peers["h"]
    pair(a, h)
    pair(c, h)
    pair(a, c)  # end-to-end keys: the hub never sees them
    a.peers["c"].endpoint = c.peers["a"].endpoint = None
    pkt = ipv4_packet("10.10.10.1", "10.10.10.2", b"secret" * 50)
    a.inject(pkt)
    envelope, _ = h.udp.sock.recvfrom(65536)  # what a sent the hub, taken off the wire
    assert envelope[0] == FrameType.RELAY
    for _ in range(2):  # delivered, then the same envelope replayed
        a.udp.sendto(envelope, h.addr)
    h.dp.on_udp()
    c.dp.on_udp()
    assert c.delivered() == [pkt]
    assert h.dp.relay.forwarded_frames == 1 and h.delivered() == []
    assert h.peers["a"].stats.relayed_frames == 1
    assert c.peers["a"].stats.rx_frames == 1 and c.peers["a"].path == f"relay:{h.id}"
    # the same envelope replayed at the hub is refused there, and counted
    assert h.dp.drops.replay == 1 and h.peers["a"].stats.replayed_frames == 1


def test_a_non_hub_refuses_to_relay(mesh):
    a, b = mesh
    kp = b.peers["a"].ring.current
    attacker_inner = seal(kp.send, FrameType.DATA, 1, 0, 0, b"x" * 40)
    assert len(attacker_inner) > 0
    # an authenticated RELAY envelope from a to a non-hub b is dropped, not forwarded
    from nodeagent.protocol.frames import wrap_relay
    akp = a.peers["b"].ring.current
    env = wrap_relay(akp.send, FrameType.RELAY, akp.remote_index, akp.next_counter(), 0, bytes(20),
                     attacker_inner)
    a.udp.sendto(env, b.addr)
    b.dp.on_udp()
    assert b.dp.drops.malformed == 1 and b.dp.relay.forwarded_frames == 0


def test_a_source_inside_a_prefix_routed_to_the_peer_is_accepted(mesh):
    a, b = mesh  # a routes 192.168.2.0/24 to b, so b may send from there
    pkt = ipv4_packet("192.168.2.9", "10.10.10.1")
    b.inject(pkt)
    a.dp.on_udp()
    assert a.delivered() == [pkt] and a.dp.drops.spoofed_source == 0


def test_a_packet_waits_for_the_peers_udp_endpoint_without_burning_a_counter(mesh):
    a, b = mesh
    a.peers["b"].endpoint = None  # link up, UDP_ENDPOINT not yet received
    pkt = ipv4_packet("10.10.10.1", "10.10.10.2")
    a.inject(pkt)
    assert a.dp.drops.no_route == 0 and len(a.peers["b"].pending) == 1
    a.peers["b"].endpoint = b.addr
    a.dp.flush_pending(a.peers["b"])
    b.dp.on_udp()
    assert b.delivered() == [pkt] and b.peers["a"].stats.lost_frames == 0


def relay_trio():
    """a reaches c through hub h; end-to-end keys a<->c the hub never sees."""
    a, h, c = Node("a", "10.10.10.1"), Node("h", "10.10.10.3", is_hub=True), Node("c", "10.10.10.2")
    a.know(h, c)
    c.know(h, a)
    h.know(a, c)
    for n in (a, h, c):
        n.start()
    a.peers["c"].hub = a.peers["h"]
    c.peers["a"].hub = c.peers["h"]
    pair(a, h)
    pair(c, h)
    pair(a, c)
    a.peers["c"].endpoint = c.peers["a"].endpoint = None
    return a, h, c


def test_a_hub_refuses_to_relay_to_an_unknown_destination_or_from_a_revoked_source():
    """Attack 34: an authenticated source asks the hub to relay to a peer id it does not know (or to
    the source itself): dropped and counted, nothing leaves. Once the hub has revoked the source
    (PeerSet.remove, revoked), its envelopes no longer reach any session: nothing is forwarded."""
    from nodeagent.peers import PeerSet
    from nodeagent.protocol.frames import wrap_relay

    a, h, c = relay_trio()
    e2e = a.peers["c"].ring.current
    hop = a.peers["h"].ring.current
    inner = seal(e2e.send, FrameType.DATA, e2e.remote_index, e2e.next_counter(), 0,
                 ipv4_packet("10.10.10.1", "10.10.10.2"))
    for dest in (os.urandom(20), bytes.fromhex(a.id)):  # unknown, and the source itself
        env = wrap_relay(hop.send, FrameType.RELAY, hop.remote_index, hop.next_counter(), 0, dest, inner)
        a.udp.sendto(env, h.addr)
    h.dp.on_udp()
    assert h.dp.relay.no_destination == 2 and h.dp.relay.forwarded_frames == 0
    c.dp.on_udp()
    assert c.delivered() == [] and c.peers["h"].stats.rx_frames == 0
    # the hub revokes a: its sessions go with it
    peers = PeerSet(h.dp, 1000)
    peers.by_id = {p.config.peer_id: p for p in h.dp.peers}
    peers.remove(a.id, revoked=True)
    a.inject(ipv4_packet("10.10.10.1", "10.10.10.2"))  # a still holds its hop keys
    h.dp.on_udp()
    c.dp.on_udp()
    assert h.dp.relay.forwarded_frames == 0 and h.dp.drops.unknown_session == 1
    assert c.delivered() == []


def test_a_hub_caps_what_it_relays_for_one_peer():
    a, h, c = Node("a", "10.10.10.1"), Node("h", "10.10.10.3", is_hub=True), Node("c", "10.10.10.2")
    a.know(h, c)
    c.know(h, a)
    h.know(a, c)
    for n in (a, h, c):
        n.start()
    a.peers["c"].hub = a.peers["h"]
    c.peers["a"].hub = c.peers["h"]
    pair(a, h)
    pair(c, h)
    pair(a, c)
    bucket = h.peers["a"].bucket
    bucket.rate, bucket.burst, bucket.tokens = 0.001, 10.0, 10.0  # burst 10, then ~nothing
    for i in range(30):
        a.inject(ipv4_packet("10.10.10.1", "10.10.10.2", bytes([i])))
        h.dp.on_udp()
    c.dp.on_udp()
    assert h.dp.relay.forwarded_frames == 10 and h.dp.relay.rate_limited == 20
    assert len(c.delivered()) == 10


def tcp_super_packet(payload: bytes, mss: int) -> bytes:
    """What a TUN with TSO on hands over: virtio_net_hdr (GSO_TCPV4) + one 64 KB-style packet."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 7, 1, 5 << 4, 0x18, 500, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0x4000, 64, 6, 0,
                     ipaddress.ip_address("10.10.10.1").packed, ipaddress.ip_address("10.10.10.2").packed)
    return struct.pack("<BBHHHH", 1, 1, 40, mss, 20, 16) + ip + tcp + payload


def test_a_tso_super_packet_leaves_as_one_frame_per_segment_and_arrives_as_one_stream():
    with linked(vnet_a=True, vnet_b=True) as (a, b):
        payload = os.urandom(10 * 1000 + 123)
        a.inject(tcp_super_packet(payload, 1000))
        assert a.peers["b"].stats.tx_frames == 11  # one frame per MSS-sized segment, never a chunk
        b.dp.on_udp()
        (written,) = b.delivered()  # the receiver's GRO merged the run back into one TUN write
        assert b.peers["a"].stats.rx_frames == 11
        assert written[10 + 40:] == payload and written[10 + 33] == 0x18  # PSH kept at the end


def test_a_super_packet_that_does_not_parse_is_dropped_as_malformed(mesh):
    a, _b = mesh
    a.dp.vnet = True
    a.inject(struct.pack("<BBHHHH", 0, 1, 40, 0, 0, 0) + ipv4_packet("10.10.10.1", "10.10.10.2"))
    assert a.dp.drops.malformed == 1 and a.peers["b"].stats.tx_frames == 0


def test_a_receiver_without_vnet_header_finishes_partial_checksums_itself():
    # b without a vnet header (SHADOWMESH_TUN_VNET=0): nothing can carry NEEDS_CSUM to its kernel
    with linked(vnet_a=True) as (a, b):
        payload = os.urandom(3000)
        a.inject(tcp_super_packet(payload, 1000))
        b.dp.on_udp()
        segments = b.delivered()
        assert len(segments) == 3 and b"".join(s[40:] for s in segments) == payload
        for seg in segments:  # RFC 1071 by hand over pseudo-header + TCP segment: all ones
            data = seg[12:20] + struct.pack("!HH", 6, len(seg) - 20) + seg[20:]
            data += b"\0" * (len(data) % 2)
            total = sum(struct.unpack(f"!{len(data) // 2}H", data))
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            assert total == 0xFFFF


def test_a_super_packet_that_runs_the_keypair_out_of_counters_sends_what_it_can_and_asks_for_a_rekey():
    from nodeagent.protocol.keys import Limits

    with linked(vnet_a=True, vnet_b=True, paired=False) as (a, b):
        now = time.monotonic()
        kpa = Keypair(os.urandom(32), os.urandom(32), local_index=1, remote_index=2, created_at=now,
                      initiator=True, limits=Limits(rekey_after_messages=5, reject_after_messages=5))
        peer = a.peers["b"]
        peer.endpoint = b.addr
        a.dp.install(peer, kpa, confirmed=True)
        a.inject(tcp_super_packet(os.urandom(11 * 1000), 1000))
        assert peer.stats.tx_frames == 5 and a.dp.drops.queue_full == 6
        assert peer in a.handshakes_wanted


def _df(packet: bytes) -> bytes:
    return packet[:6] + b"\x40\x00" + packet[8:]  # IPv4 "don't fragment" (its header checksum is not checked)


def test_a_packet_too_big_for_a_narrow_path_is_answered_into_the_tun_not_sent(mesh):
    """Step 3b: the kernel knows b's path takes 1,280 bytes (what udp.py keeps after a GSO send was
    refused), so a 1,400-byte packet with DF set is answered with ICMP "fragmentation needed"
    for 1,280 - 28 - 36 = 1,216 bytes; one that may be fragmented leaves cut into fragments
    that fit, and one that fits leaves whole."""
    a, b = mesh
    a.udp.path_mtus[b.addr] = 1280
    big = _df(ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1380)))
    a.inject(big)
    (answer,) = a.delivered()
    assert answer[9] == 1 and answer[12:16] == big[16:20] and answer[16:20] == big[12:16]
    assert answer[20:22] == b"\x03\x04" and struct.unpack_from("!H", answer, 26)[0] == 1216
    assert a.dp.drops.too_big == 1 and a.peers["b"].stats.tx_frames == 0
    b.dp.on_udp()
    assert b.delivered() == []
    may_fragment = ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1380))
    fits = _df(ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1196)))
    a.inject(may_fragment)
    a.inject(fits)
    b.dp.on_udp()
    first, second, whole = b.delivered()
    assert (len(first), len(second)) == (1212, 20 + 1380 - 1192) and whole == fits
    assert first[20:] + second[20:] == may_fragment[20:]  # offsets and flags: test_ipfrag.py
    assert a.delivered() == [] and a.dp.drops.too_big == 1 and a.dp.fragmented == 1


def test_a_udp_packet_with_a_partial_checksum_is_finished_before_it_is_cut():
    """From a vnet TUN a local UDP packet comes with its checksum left to the device
    (NEEDS_CSUM): the fragments must carry the finished checksum, since no fragment can carry
    the partial-checksum flag for the whole."""
    with linked(vnet_a=True) as (a, b):
        a.udp.path_mtus[b.addr] = 1280
        body = os.urandom(1372)
        udp = struct.pack("!HHHH", 40000, 53, 8 + len(body), 0) + body
        ip = bytearray(ipv4_packet("10.10.10.1", "10.10.10.2", udp))
        pseudo = sum(struct.unpack("!4H", ip[12:20])) + 17 + len(udp)  # what the kernel leaves
        struct.pack_into("!H", ip, 26, (pseudo & 0xFFFF) + (pseudo >> 16))
        a.inject(struct.pack("<BBHHHH", 1, 0, 0, 0, 20, 6) + bytes(ip))  # NEEDS_CSUM, GSO_NONE
        b.dp.on_udp()
        first, second = b.delivered()
        whole = first[20:] + second[20:]
        data = ip[12:20] + struct.pack("!HH", 17, len(whole)) + whole  # pseudo-header + UDP
        total = sum(struct.unpack(f"!{len(data) // 2}H", data + b"\0" * (len(data) % 2)))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        assert total == 0xFFFF and whole[8:] == body and a.dp.fragmented == 1


def test_without_a_narrow_path_nothing_is_answered(mesh):
    a, b = mesh
    a.udp.path_mtus[("127.0.0.1", 9)] = 1280  # another address's path
    big = _df(ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1380)))
    a.inject(big)
    b.dp.on_udp()
    assert b.delivered() == [big] and a.delivered() == [] and a.dp.drops.too_big == 0


def test_the_too_big_answers_are_rate_limited_and_the_rest_leave(mesh):
    a, b = mesh
    a.udp.path_mtus[b.addr] = 1280
    a.dp.clock = lambda: 5.0  # one instant: the bucket holds its burst and never refills
    big = _df(ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1380)))
    for _ in range(int(TOO_BIG_RATE) + 1):
        a.inject(big)
    assert len(a.delivered()) == TOO_BIG_RATE and a.dp.drops.too_big == TOO_BIG_RATE
    b.dp.on_udp()
    assert b.delivered() == [big]  # past the rate, the packet goes as it would have


def test_a_tso_super_packet_too_big_for_a_narrow_path_is_answered_once_for_all_its_segments():
    """Judged by its first segment (1,340 bytes > 1,216): one answer, with a vnet header on a
    vnet TUN; all three segments are counted, none leaves. The kernel's TCP then cuts smaller."""
    with linked(vnet_a=True, vnet_b=True) as (a, b):
        a.udp.path_mtus[b.addr] = 1280
        a.inject(tcp_super_packet(os.urandom(3 * 1300), 1300))
        (answer,) = a.delivered()
        assert answer[:10] == bytes(10)  # virtio_net_hdr: no offload
        icmp = answer[10 + 20:]
        assert icmp[:2] == b"\x03\x04" and struct.unpack_from("!H", icmp, 6)[0] == 1216
        assert icmp[8 + 20 + 2:8 + 20 + 4] == struct.pack("!H", 5201)  # it quotes the TCP segment's header
        assert a.dp.drops.too_big == 3 and a.peers["b"].stats.tx_frames == 0


def test_a_relayed_peers_packet_is_judged_by_the_hubs_path_and_the_relay_overhead():
    """a reaches c through hub h, and a's path to h is the narrow one (1,280 bytes): the frame a
    relayed packet needs carries the relay envelope too (92 bytes), so the limit is 1,280 - 28 - 92
    = 1,160; a 1,200-byte packet that would fit a direct frame (1,216) is answered, one of 1,160
    still goes through the hub to c."""
    a, h, c = relay_trio()
    a.udp.path_mtus[h.addr] = 1280
    big = _df(ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1180)))
    a.inject(big)
    (answer,) = a.delivered()
    assert answer[20:22] == b"\x03\x04" and struct.unpack_from("!H", answer, 26)[0] == 1160
    assert a.dp.drops.too_big == 1
    fits = _df(ipv4_packet("10.10.10.1", "10.10.10.2", bytes(1140)))
    a.inject(fits)
    h.dp.on_udp()
    c.dp.on_udp()
    assert c.delivered() == [fits] and h.dp.relay.forwarded_frames == 1
