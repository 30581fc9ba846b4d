"""Path-discovery frames in the data path and their answers (tunnel/datapath.py `_disco`, `send_disco`;
traversal.py `on_disco`), on loopback sockets: an authenticated probe is answered with an ACK that is
never larger; a forged, unknown or replayed one gets nothing and is counted; probes never move an
endpoint nor count as lost data; a punched peer's data goes direct while its handshake hub stays."""

from __future__ import annotations

import pytest

from nodeagent.protocol import disco
from nodeagent.protocol.frames import FrameType, parse_header, seal
from nodeagent.traversal import Traversal
from nodeagent.tunnel.udp import UdpSocket
from tests.nodeagent.tunnel.test_datapath import Node, ipv4_packet, pair

TXID = b"probe-01"


class PeerList:
    def __init__(self, peers):
        self.peers = peers

    def get(self, pid):
        return next((p for p in self.peers if p.config.peer_id == pid), None)

    def __iter__(self):
        return iter(self.peers)


def answering(node: Node) -> Traversal:
    """The node's traversal (its on_disco answers probes), with nothing else around it."""
    t = Traversal(
        node.id,
        PeerList(list(node.peers.values())),
        node.dp,
        udp_port=node.udp.port,
        mtu=1380,
        clock=lambda: 0.0,
        resolve=lambda p: None,
        hub_ids=lambda: (),
        interface_addresses=list,
        skip_interfaces=(),
        skip_networks=list,
        on_candidates=lambda c: None,
        spawn=lambda c: c.close(),
    )
    for p in node.peers.values():
        t.peer_added(p)
    node.dp.on_disco = t.on_disco
    return t


def recording(node: Node) -> list:
    seen = []
    node.dp.on_disco = lambda peer, ftype, payload, addr, hub, now: seen.append(
        (peer, ftype, payload, addr, hub)
    )
    return seen


def drain(sock: UdpSocket) -> list[bytes]:
    out, buf = [], bytearray(65536)
    while True:
        try:
            n, _seg, _addr = sock.recv_into(buf)
        except BlockingIOError:
            return out
        out.append(bytes(buf[:n]))


@pytest.fixture
def ab():
    a, b = Node("a", "10.10.10.1"), Node("b", "10.10.10.2")
    a.know(b)
    b.know(a)
    a.start()
    b.start()
    pair(a, b)
    yield a, b
    for n in (a, b):
        n.udp.close()
        n.tun.close()
        n.tun_app.close()


def test_an_authenticated_probe_gets_an_ack_with_its_source_and_never_a_larger_one(ab):
    a, b = ab
    answering(b)
    got = recording(a)
    sent = a.dp.send_disco(a.peers["b"], FrameType.PROBE, disco.pack_probe(TXID, 7), dest=b.addr)
    b.dp.on_udp()
    a.dp.on_udp()
    ((peer, ftype, payload, addr, hub),) = got
    assert peer is a.peers["b"] and ftype == FrameType.PROBE_ACK and hub is None and addr == b.addr
    ack = disco.parse_ack(payload)
    assert ack == disco.Ack(TXID, 7, a.addr)  # the ACK tells a where its probe came from
    assert len(payload) + 36 <= sent  # the ACK frame is smaller than the probe frame


def test_forged_unknown_and_replayed_probes_get_nothing_and_are_counted(ab):
    a, b = ab
    answering(b)
    kp = a.peers["b"].ring.current
    probe = seal(
        kp.disco.send, FrameType.PROBE, kp.remote_index, kp.disco.next_counter(), 0, disco.pack_probe(TXID, 1)
    )
    forged = bytearray(probe)
    forged[-1] ^= 1
    unknown = bytearray(probe)
    unknown[4:8] = (kp.remote_index ^ 0xFFFF).to_bytes(4, "big")
    data_key = seal(kp.send, FrameType.PROBE, kp.remote_index, 999, 0, disco.pack_probe(TXID, 1))
    for dgram in (bytes(forged), bytes(unknown), data_key, probe, probe):
        a.udp.sendto(dgram, b.addr)
    b.dp.on_udp()
    drops = b.dp.drops
    assert (drops.bad_tag, drops.unknown_session, drops.replay) == (2, 1, 1)
    replies = drain(a.udp)
    assert len(replies) == 1 and parse_header(replies[0]).type == FrameType.PROBE_ACK  # the genuine one


def test_a_probe_never_moves_the_endpoint_and_never_counts_as_lost_data(ab):
    a, b = ab
    answering(b)
    other = UdpSocket.open("127.0.0.1", 0)
    try:
        kp = a.peers["b"].ring.current
        for _ in range(5):
            kp.disco.next_counter()  # five probes to candidates that never answered
        probe = seal(
            kp.disco.send,
            FrameType.PROBE,
            kp.remote_index,
            kp.disco.next_counter(),
            0,
            disco.pack_probe(TXID, 2),
        )
        other.sendto(probe, b.addr)  # authenticated, from an address b has never seen
        b.dp.on_udp()
        assert b.peers["a"].endpoint == a.addr  # only data and keepalives roam
        assert len(drain(other)) == 1  # the ACK went to the probe's source all the same
        a.inject(ipv4_packet("10.10.10.1", "10.10.10.2"))
        b.dp.on_udp()
        assert len(b.delivered()) == 1 and b.peers["a"].stats.lost_frames == 0
    finally:
        other.close()


def test_a_malformed_disco_payload_is_counted():
    a, b = Node("a", "10.10.10.1"), Node("b", "10.10.10.2")
    a.know(b)
    b.know(a)
    a.start()
    b.start()
    pair(a, b)
    answering(b)
    a.dp.send_disco(a.peers["b"], FrameType.PROBE, b"\x01" * 12, dest=b.addr)  # too short for a probe
    a.dp.send_disco(a.peers["b"], FrameType.CALL, b"\x09" + bytes(10), dest=b.addr)  # unknown kind
    b.dp.on_udp()
    assert b.dp.drops.malformed == 2 and drain(a.udp) == []


def hub_triangle():
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


def test_a_probe_through_a_hub_is_answered_through_the_same_hub_without_an_address():
    a, h, c = hub_triangle()
    answering(c)
    got = recording(a)
    assert a.dp.send_disco(a.peers["c"], FrameType.PROBE, disco.pack_probe(TXID, 3), via=a.peers["h"])
    h.dp.on_udp()  # RELAY -> RELAYED
    c.dp.on_udp()  # probe in, ACK out through h
    h.dp.on_udp()
    a.dp.on_udp()
    ((peer, ftype, payload, _addr, hub),) = got
    assert peer is a.peers["c"] and ftype == FrameType.PROBE_ACK and hub is a.peers["h"]
    assert disco.parse_ack(payload) == disco.Ack(TXID, 3, None)  # the hub's address is no candidate
    assert h.dp.relay.forwarded_frames == 2 and h.delivered() == []


def test_a_punched_peer_gets_its_data_directly_while_its_handshake_hub_stays():
    a, h, c = hub_triangle()
    pc = a.peers["c"]
    pc.data_hub, pc.endpoint = None, c.addr  # what the traversal does once a path is validated
    assert pc.hub is a.peers["h"] and pc.path == "direct"
    pkt = ipv4_packet("10.10.10.1", "10.10.10.2")
    a.inject(pkt)
    c.dp.on_udp()
    assert c.delivered() == [pkt]
    h.dp.on_udp()
    assert h.dp.relay.forwarded_frames == 0
    # c still sends back through the hub: a takes it, and it does not move a's endpoint for c
    c.inject(ipv4_packet("10.10.10.2", "10.10.10.1"))
    h.dp.on_udp()
    a.dp.on_udp()
    assert len(a.delivered()) == 1 and pc.endpoint == c.addr
    pc.hub = a.peers["h"]  # a new handshake hub (paths/select.py) sets the data hub with it
    assert pc.data_hub is a.peers["h"] and pc.path == f"relay:{h.id}"


def test_a_call_needs_a_session_and_a_hub_to_travel():
    a, _h, _c = hub_triangle()
    call = disco.pack_call(disco.Call(disco.CallKind.OFFER, TXID, disco.NatClass.EASY, ()))
    assert a.dp.send_disco(a.peers["c"], FrameType.CALL, call, via=a.peers["h"]) > 0
    a.peers["h"].ring.wipe_all()  # no hub keys: nothing leaves, nothing is counted as sent
    assert a.dp.send_disco(a.peers["c"], FrameType.CALL, call, via=a.peers["h"]) == 0
