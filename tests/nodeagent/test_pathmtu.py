"""Path MTU probing at run time (pathmtu.py) between two real data paths on loopback sockets: a's
probes are sealed PROBE frames, b's traversal answers them as it answers any probe, and what a
finds lands in a's UdpSocket.path_mtus, which the data path enforces (step 3b). The path is
loopback, which carries everything; a black hole is made by dropping, between a's socket and b's
data path, the datagrams bigger than it lets through."""

from __future__ import annotations

import pytest

from nodeagent import pathmtu
from nodeagent.pathmtu import PathMtuProbes
from nodeagent.paths.plpmtu import CHECK_TRIES, LOST_AFTER_S, RECHECK_S, SEARCH_ROUND_S, SEARCH_ROUNDS
from nodeagent.protocol.frames import FrameType
from tests.nodeagent.tunnel.test_datapath import Node, linked, pair
from tests.nodeagent.tunnel.test_disco_datapath import PeerList, answering

MTU = 1380
STEP = pathmtu.TICK_S


class World:
    """a probes b; `carries`: the largest UDP payload the path from a to b delivers."""

    def __init__(self, a: Node, b: Node, carries: int = 65535) -> None:
        self.a, self.b = a, b
        self.carries = carries
        self.now = 0.0
        self.peers = PeerList(list(a.peers.values()))
        self.probes = PathMtuProbes(self.peers, a.dp, a.udp, mtu=MTU, clock=lambda: self.now)
        answering(b)
        a.dp.on_disco = self._on_disco
        self.other = []  # frames not for the prober

    def _on_disco(self, peer, ftype, payload, addr, hub, now):
        if ftype == FrameType.PROBE_ACK and self.probes.owns(payload):
            self.probes.on_ack(peer, payload, hub, now)
        else:
            self.other.append(ftype)

    def _cross(self) -> None:
        """Deliver a's datagrams to b's data path, those that fit the path only."""
        buf, fitting = bytearray(65536), []
        while True:
            try:
                n, _seg, _addr = self.b.udp.recv_into(buf)
            except BlockingIOError:
                break
            if n <= self.carries:
                fitting.append(bytes(buf[:n]))
        for datagram in fitting:  # back into b's socket, from a's
            self.a.udp.sendto(datagram, self.b.addr)
        self.b.dp.on_udp()
        self.a.dp.on_udp()

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += STEP
            self.probes.tick(self.now)
            self._cross()


@pytest.fixture
def world():
    with linked() as (a, b):
        yield World(a, b)


SEARCH_TIME = CHECK_TRIES * LOST_AFTER_S + SEARCH_ROUNDS * SEARCH_ROUND_S + 1


def test_a_path_that_carries_full_size_frames_is_ok_and_nothing_is_enforced(world):
    world.run(2)
    assert world.probes.peer_fields(world.a.peers["b"], world.now)["path_mtu"]["state"] == "ok"
    assert world.probes.peer_fields(world.a.peers["b"], world.now)["path_mtu"]["fits"] == MTU
    assert world.a.udp.path_mtus == {} and world.other == []


def test_a_black_hole_is_found_and_enforced_for_that_address(world):
    world.carries = 1280 - 20 - 8  # a 1,280-byte path: UDP payloads up to 1,252 bytes
    world.run(SEARCH_TIME)
    b = world.a.peers["b"]
    fields = world.probes.peer_fields(b, world.now)["path_mtu"]
    assert fields["state"] == "narrow" and fields["fits"] == 1280 - 20 - 8 - 36
    assert world.a.udp.path_mtus == {b.endpoint: 1280}  # what step 3b enforces
    world.carries = 65535  # the path widens: seen at the next check
    world.run(RECHECK_S + 1)
    assert world.a.udp.path_mtus == {}


def test_a_peer_that_moves_or_is_removed_takes_its_finding_with_it(world):
    world.carries = 1280 - 20 - 8
    world.run(SEARCH_TIME)
    b = world.a.peers["b"]
    old = b.endpoint
    assert old in world.a.udp.path_mtus
    b.endpoint = ("127.0.0.3", old[1])  # roamed
    world.probes.tick(world.now + STEP)
    assert world.a.udp.path_mtus == {}
    assert world.probes.peer_fields(b, world.now)["path_mtu"]["state"] == "check"  # a fresh search
    b.endpoint = old
    world.run(SEARCH_TIME)
    assert world.a.udp.path_mtus == {old: 1280}
    world.probes.peer_removed(b, revoked=False)
    assert world.a.udp.path_mtus == {}
    assert world.probes.peer_fields(b, world.now) == {"path_mtu": None}


def test_peers_without_keys_or_whose_data_takes_a_hub_are_not_probed(world):
    b = world.a.peers["b"]
    b.data_hub = world.a.peers["b"]  # stands for any hub: the data leaves for the hub's address
    world.run(2)
    assert world.probes.peer_fields(b, world.now) == {"path_mtu": None}
    b.data_hub = None
    b.ring.wipe_all()
    world.run(2)
    assert world.probes.peer_fields(b, world.now) == {"path_mtu": None}


def test_a_malformed_answer_with_our_txid_is_counted_and_changes_nothing(world):
    b = world.a.peers["b"]
    world.probes.tick(0.0)  # a check in flight (its probe not delivered): an answer could end it
    world.probes.on_ack(b, world.probes.txid + b"\x00", None, 0.0)
    assert world.a.dp.drops.malformed == 1
    assert world.probes.peer_fields(b, 0.0)["path_mtu"]["state"] == "check"


def test_first_checks_are_spread_over_ticks(monkeypatch):
    monkeypatch.setattr(pathmtu, "STARTS_PER_TICK", 1)
    with linked() as (a, b):
        c = Node("c", "10.10.10.3")
        try:
            a.know(c)
            c.know(a)
            a.start()
            c.start()
            pair(a, b)
            pair(a, c)
            probes = PathMtuProbes(PeerList(list(a.peers.values())), a.dp, a.udp, mtu=MTU, clock=lambda: 0.0)
            probes.tick(0.0)
            assert len(probes.probed) == 1
            probes.tick(pathmtu.TICK_S)
            assert len(probes.probed) == 2
        finally:
            for sock in (c.udp, c.tun, c.tun_app):
                sock.close()


def test_a_path_that_carries_relayed_frames_is_probed_at_their_size_and_a_new_role_starts_over(world):
    b = world.a.peers["b"]
    relays: set[str] = set()
    world.probes.relays = lambda: relays
    sent = []
    send = world.a.dp.send_disco
    world.a.dp.send_disco = lambda peer, ftype, payload, **kw: sent.append(len(payload)) or send(
        peer, ftype, payload, **kw)
    world.run(1)
    assert sent == [MTU]  # a direct frame of the overlay MTU
    relays.add(b.config.peer_id)  # b relays for others now: relayed frames are 56 bytes bigger
    world.run(1)
    assert sent == [MTU, MTU + 92 - 36]
    assert world.probes.peer_fields(b, world.now)["path_mtu"]["fits"] == MTU + 56
    world.probes.relays = lambda: None  # we are a hub: every path carries relayed frames
    world.run(1)
    assert sent == [MTU, MTU + 92 - 36]  # b's path already counted as one: no fresh search
