"""Enrolled mode without root: an Agent (a pipe stands in for the TUN, sockets on loopback) applies
netmaps live — peers added, revoked, routes changed, relays as fallback — through routing.plan.
The kernel side (routes on a real TUN) and the wire are covered in tests/integration/."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.agent import Agent
from nodeagent.config import AgentConfig
from nodeagent.identity import NodeIdentity
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.cert import CertFlags, issue_certificate
from nodeagent.protocol.identity import peer_id
from nodeagent.protocol.keys import Keypair
from nodeagent.protocol.trust import MeshCA, PeerIdentity
from nodeagent.startup import bind_control
from nodeagent.tunnel.tun import TunDevice
from nodeagent.tunnel.udp import UdpSocket

UK, MAC, STARLINK = "11" * 20, "22" * 20, "33" * 20


def _peer(pid: str, name: str, ip: str, relay: str | None = None, fp: str = "0" * 64) -> nm.Peer:
    return nm.Peer(peer_id=pid, name=name, overlay_ip=ip, fingerprint=fp,
                   endpoints=(nm.Endpoint("127.0.0.1", 9, 9),), relay=relay)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def agent(tmp_path):
    async for a in _agent(tmp_path):
        yield a


@pytest.fixture
async def timed_agent(tmp_path, clock):
    """An agent on a fake clock with a fixed retry jitter of 0.1 s."""
    async for a in _agent(tmp_path, clock=clock, jitter=lambda: 0.1):
        yield a


async def _agent(tmp_path, **kwargs):
    ca = mldsa.MLDSA87PrivateKey.generate()
    key = mldsa.MLDSA87PrivateKey.generate()
    pk = key.public_key().public_bytes_raw()
    now = int(time.time())
    cert = issue_certificate(ca, public_key=pk, name="belgium", network="demo", overlay_ip="10.10.10.2",
                             prefix_len=24, flags=CertFlags(0), not_before=now - 60, not_after=now + 3600)
    config = AgentConfig(path=tmp_path, name="belgium", private_key_path=tmp_path / "node.key",
                         overlay=ipaddress.ip_interface("10.10.10.2/24"),
                         listen_ip=ipaddress.ip_address("127.0.0.1"), control_port=0, udp_port=0,
                         public=False, interface="smtestnotthere", mtu=None,
                         control_socket=tmp_path / "s.sock")
    r, w = os.pipe()
    udp = UdpSocket.open("127.0.0.1", 0)
    sock = bind_control("127.0.0.1", 0)
    a = Agent(config, NodeIdentity(key, pk, peer_id(pk)), TunDevice(r, "smtestnotthere", False), udp, sock,
              1380, certificate=cert, ca_public_key=ca.public_key().public_bytes_raw(), **kwargs)
    a.test_ca = ca  # the network's CA, for tests that issue peer certificates
    try:
        yield a
    finally:
        udp.close()
        sock.close()
        os.close(r)
        os.close(w)


async def _apply(agent: Agent, netmap: nm.NetMap) -> None:
    await agent.enrolled.apply_netmap(netmap)


def _map(agent: Agent, serial: int, peers, routes=(), revoked=()) -> nm.NetMap:
    me = nm.SelfInfo(peer_id=agent.handshakes.local.peer_id, name="belgium", overlay_ip="10.10.10.2",
                     prefix_len=24)
    ordered = tuple(sorted(peers, key=lambda p: p.peer_id))
    return nm.NetMap(network="demo", serial=serial, node=me, peers=ordered, routes=tuple(routes),
                     revoked=tuple(revoked))


def _hop(agent: Agent, address: str):
    hop = agent.datapath.route(ipaddress.ip_address(address).packed)
    return None if hop is None else hop.config.peer_id


async def test_a_netmap_adds_its_peers_and_routes_their_addresses(agent):
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1"), _peer(MAC, "mac", "10.10.10.4")]))
    assert set(agent.peers.by_id) == {UK, MAC}
    assert _hop(agent, "10.10.10.1") == UK and _hop(agent, "10.10.10.4") == MAC
    assert isinstance(agent.handshakes.trust, MeshCA) and agent.handshakes.trust.knows(MAC)
    assert not agent.handshakes.trust.knows(STARLINK)  # never in a netmap: refused before any work
    assert {p["name"] for p in agent.status()["peers"]} == {"uk", "mac"}


async def test_a_revoked_peer_is_dropped_and_can_never_handshake_again(agent):
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1"), _peer(MAC, "mac", "10.10.10.4")]))
    mac = agent.peers.by_id[MAC]
    revoked = _map(agent, 2, [_peer(UK, "uk", "10.10.10.1"), _peer(MAC, "mac", "10.10.10.4")],
                   revoked=[nm.Revocation(MAC, "ab" * 32)])
    await _apply(agent, revoked)
    assert set(agent.peers.by_id) == {UK}
    assert _hop(agent, "10.10.10.4") is None
    assert mac not in agent.peers and mac.id_bytes not in agent.datapath.by_id
    assert not agent.handshakes.trust.knows(MAC) and MAC in agent.handshakes.trust.revoked
    assert agent.status()["node"]["revoked_peers"] == [MAC]
    # still revoked when a later map no longer lists it at all
    await _apply(agent, _map(agent, 3, [_peer(UK, "uk", "10.10.10.1")]))
    assert MAC in agent.handshakes.trust.revoked


async def test_a_peer_that_leaves_the_netmap_is_removed(agent):
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1"), _peer(MAC, "mac", "10.10.10.4")]))
    await _apply(agent, _map(agent, 2, [_peer(UK, "uk", "10.10.10.1")]))
    trust = agent.handshakes.trust
    assert set(agent.peers.by_id) == {UK} and not trust.knows(MAC) and MAC not in trust.revoked


async def test_a_route_through_a_peer_is_added_and_removed_live(agent):
    peers = [_peer(UK, "uk", "10.10.10.1"), _peer(MAC, "mac", "10.10.10.4")]
    await _apply(agent, _map(agent, 1, peers))
    assert _hop(agent, "192.168.77.9") is None
    await _apply(agent, _map(agent, 2, peers, routes=[nm.Route("192.168.77.0/24", MAC)]))
    assert _hop(agent, "192.168.77.9") == MAC
    assert agent.peers.by_id[MAC].config.allowed_ips == (ipaddress.ip_network("192.168.77.0/24"),)
    await _apply(agent, _map(agent, 3, peers))
    assert _hop(agent, "192.168.77.9") is None and agent.peers.by_id[MAC].config.allowed_ips == ()


async def test_a_relay_is_used_while_no_direct_link_is_up(agent):
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1"),
                                        _peer(STARLINK, "starlink", "10.10.10.3", relay=UK)]))
    assert agent.peers.by_id[STARLINK].hub is agent.peers.by_id[UK]
    paths = {p["peer_id"]: p["path"] for p in agent.status()["peers"]}
    assert paths == {UK: "direct", STARLINK: f"relay:{UK}"}
    # the relay leaves the map: the peer has no relay any more
    await _apply(agent, _map(agent, 2, [_peer(STARLINK, "starlink", "10.10.10.3", relay=UK)]))
    assert agent.peers.by_id[STARLINK].hub is None


async def test_a_netmap_for_another_node_is_ignored(agent):
    them = nm.SelfInfo(peer_id=UK, name="uk", overlay_ip="10.10.10.1", prefix_len=24)
    other = nm.NetMap(network="demo", serial=5, node=them, peers=(_peer(MAC, "mac", "10.10.10.4"),))
    await _apply(agent, other)
    assert agent.peers.by_id == {} and agent.enrolled.applied is None


async def test_a_new_endpoint_restarts_the_peers_dialer(agent):
    import asyncio

    agent.running = True  # as inside Agent.run(): dialers start with the peers
    try:
        await _apply(agent, _map(agent, 1, [_peer(MAC, "mac", "10.10.10.4")]))
        first = agent.links.dialers[MAC]
        moved = nm.Peer(peer_id=MAC, name="mac", overlay_ip="10.10.10.4", fingerprint="0" * 64,
                        endpoints=(nm.Endpoint("127.0.0.2", 9, 9),))
        await _apply(agent, _map(agent, 2, [moved]))
        await asyncio.sleep(0)
        assert agent.peers.by_id[MAC].config.endpoint == ("127.0.0.2", 9)
        assert agent.links.dialers[MAC] is not first and first.cancelled()
    finally:
        for task in list(agent.tasks):
            task.cancel()
        await asyncio.gather(*agent.tasks, return_exceptions=True)


def _run_ticks(agent: Agent, clock: FakeClock, until: float, step: float = 0.25) -> None:
    while clock.now < until:
        clock.now = round(clock.now + step, 6)
        agent.tick(clock.now)


async def test_a_peer_without_a_path_is_retried_every_5_s_then_given_up_until_new_traffic(timed_agent, clock):
    agent = timed_agent
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1")]))
    uk, session = agent.peers.by_id[UK], agent.sessions.get(UK)
    uk.pending.append(b"a packet waiting for keys")
    start = clock.now
    agent.sessions.need_keys(uk)  # what the data path calls for a packet without keys
    assert session.handshaking and session.attempts == 1
    assert UK not in agent.handshakes.initiators  # no link: unsent
    _run_ticks(agent, clock, start + 85)
    assert session.attempts == 17 and uk.pending  # one attempt per 5 s + the 0.1 s jitter, still trying
    _run_ticks(agent, clock, start + 100)
    assert not session.handshaking and not uk.pending  # gave up after 90 s, the queue dropped
    _run_ticks(agent, clock, start + 200)
    assert not session.handshaking  # silence...
    agent.sessions.need_keys(uk)
    assert session.handshaking and session.attempts == 1  # ...until new outgoing data


async def test_an_idle_session_gets_keepalives_and_its_keys_expire_at_180_s(timed_agent, clock):
    agent = timed_agent
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1")]))
    uk = agent.peers.by_id[UK]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
        far.bind(("127.0.0.1", 0))
        far.setblocking(False)
        uk.endpoint = far.getsockname()
        kp = Keypair(bytes([1]) * 32, bytes([2]) * 32, local_index=7, remote_index=8, created_at=0,
                     initiator=False)
        agent.handshakes.install(uk, SimpleNamespace(peer=PeerIdentity(UK, bytes(32)), keypair=kp,
                                                     initiator=False))
        start = clock.now
        assert uk.stats.tx_frames == 1  # the responder's first frame on new keys
        assert agent.datapath.sessions[7] == (uk, kp)
        _run_ticks(agent, clock, start + 9.75)
        assert uk.stats.tx_frames == 1
        _run_ticks(agent, clock, start + 10.0)
        assert uk.stats.tx_frames == 2  # 10 s without sending: a keepalive
        assert far.recv(2048) and far.recv(2048)
        _run_ticks(agent, clock, start + 179.75)
        assert uk.ring.current is kp and 7 in agent.datapath.sessions
        _run_ticks(agent, clock, start + 180.0)
        assert kp.wiped and uk.ring.current is None and 7 not in agent.datapath.sessions


async def test_rtt_probes_continue_every_keepalive_period_under_steady_traffic(timed_agent, clock):
    agent = timed_agent
    await _apply(agent, _map(agent, 1, [_peer(UK, "uk", "10.10.10.1")]))
    uk = agent.peers.by_id[UK]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
        far.bind(("127.0.0.1", 0))
        far.setblocking(False)
        uk.endpoint = far.getsockname()
        kp = Keypair(bytes([1]) * 32, bytes([2]) * 32, local_index=7, remote_index=8, created_at=0,
                     initiator=False)
        agent.handshakes.install(uk, SimpleNamespace(peer=PeerIdentity(UK, bytes(32)), keypair=kp,
                                                     initiator=False))
        start = clock.now
        first_probe = uk.echo_sent
        while clock.now < start + 25:
            clock.now = round(clock.now + 0.25, 6)
            uk.last_tx = uk.last_rx = clock.now  # data both ways on every tick: the link is never idle
            agent.tick(clock.now)
        # the session sends no idle keepalive, yet an echo request went out at 10 s and at 20 s
        assert uk.stats.tx_frames == 3
        assert uk.echo_sent is not first_probe and uk.echo_sent[1] == start + 20


def _handshake(initiator, responder, now: float) -> None:
    responder.consume_hello(initiator.create_hello(), now)
    initiator.consume_challenge(responder.create_challenge(), now)
    responder.consume_confirm(initiator.create_confirm(), now)


async def test_a_certificate_whose_overlay_address_is_not_the_netmaps_is_refused_at_the_handshake(agent):
    """Issue 9, item 9: the CA certified uk at 10.10.10.9, the netmap places it at 10.10.10.1 (the
    address the data path will accept from it): the handshake is refused, in both roles."""
    from nodeagent.protocol.handshake import Initiator, Responder
    from nodeagent.protocol.handshake_errors import HandshakeError
    from nodeagent.protocol.trust import LocalIdentity

    key = mldsa.MLDSA87PrivateKey.generate()
    pk = key.public_key().public_bytes_raw()
    uk_id = peer_id(pk)
    now = time.time()

    def cert(ip: str) -> bytes:
        return issue_certificate(agent.test_ca, public_key=pk, name="uk", network="demo", overlay_ip=ip,
                                 prefix_len=24, flags=CertFlags(0), not_before=int(now) - 60,
                                 not_after=int(now) + 3600)

    await _apply(agent, _map(agent, 1, [_peer(uk_id, "uk", "10.10.10.1")]))
    ours = agent.handshakes.local.peer_id
    uk_trust = MeshCA(agent.test_ca.public_key().public_bytes_raw())
    for ip, refused in (("10.10.10.9", True), ("10.10.10.1", False)):
        uk_local = LocalIdentity(key, cert(ip))
        # uk dials us
        ini = Initiator(uk_local, uk_trust, ours, now)
        if refused:
            with pytest.raises(HandshakeError):
                _handshake(ini, agent.handshakes.make_responder(), now)
        else:
            _handshake(ini, agent.handshakes.make_responder(), now)
        # we dial uk
        ini = agent.handshakes.make_initiator(agent.peers.get(uk_id))
        if refused:
            with pytest.raises(HandshakeError):
                _handshake(ini, Responder(uk_local, uk_trust, now), now)
        else:
            _handshake(ini, Responder(uk_local, uk_trust, now), now)
        now += 1


async def test_an_exit_node_in_use_gets_the_default_route_and_only_it_may_send_from_anywhere(
        agent, monkeypatch):
    """The exit node chosen in the map (use_exit) carries every destination the mesh does not, and its
    answers from any address pass the receive path's source check (the same table); the kernel side
    (policy rules, the exit node's nftables table) is recorded here, not run: it is tested in
    namespaces (tests/integration/test_exit_node.py, tests/nodeagent/tunnel/test_exit_tables.py)."""
    from nodeagent import exitnode
    from nodeagent.tunnel import nft
    from nodeagent.tunnel import tun as tunmod

    calls: list = []
    monkeypatch.setattr(tunmod, "exit_routing_up", lambda name, version, mark: calls.append(("up", version)))
    monkeypatch.setattr(tunmod, "exit_routing_down", lambda version=None: calls.append(("down", version)))
    monkeypatch.setattr(tunmod, "set_routes", lambda name, addr, add=(), remove=(): calls.append(
        ("routes", [str(n) for n in add])))
    monkeypatch.setattr(nft, "apply", lambda *a, **k: calls.append(("nft", "apply")))
    monkeypatch.setattr(nft, "remove", lambda *a, **k: calls.append(("nft", "remove")))
    monkeypatch.setattr(exitnode, "_read_forwarding", lambda version: "1")
    agent.enrolled.exit = exitnode.ExitNode("smtestnotthere", "10.10.10.2/24")
    peers = [_peer(UK, "uk", "10.10.10.1"), _peer(MAC, "mac", "10.10.10.4")]
    routes = [nm.Route("0.0.0.0/0", UK), nm.Route("::/0", UK), nm.Route("192.168.7.0/24", MAC)]

    def with_self(serial: int, **kw) -> nm.NetMap:
        m = _map(agent, serial, peers, routes)
        return nm.NetMap(m.network, m.serial, nm.SelfInfo(m.node.peer_id, "belgium", "10.10.10.2", 24, **kw),
                         m.peers, m.routes)

    await _apply(agent, with_self(1))  # offered, not chosen: nothing goes there
    assert _hop(agent, "198.51.100.7") is None and agent.peers.by_id[UK].config.allowed_ips == ()
    assert ("up", 4) not in calls and ("routes", ["192.168.7.0/24"]) in calls

    await _apply(agent, with_self(2, use_exit=UK))
    assert _hop(agent, "198.51.100.7") == UK and _hop(agent, "192.168.7.9") == MAC
    assert [str(n) for n in agent.peers.by_id[UK].config.allowed_ips] == ["0.0.0.0/0"]
    assert ("up", 4) in calls
    assert all("0.0.0.0/0" not in c[1] for c in calls if c[0] == "routes")  # never on the main table
    exit_doc = agent.status()["node"]["exit_node"]
    assert exit_doc["using"] == UK and exit_doc["routing"] and exit_doc["source"] == "dashboard"
    uk_peer = agent.peers.by_id[UK]
    mac_peer = agent.peers.by_id[MAC]
    src = ipaddress.ip_address("198.51.100.7").packed
    assert agent.datapath.route(src) is uk_peer and agent.datapath.route(src) is not mac_peer

    await _apply(agent, with_self(3))  # the choice is withdrawn
    assert _hop(agent, "198.51.100.7") is None and ("down", 4) in calls
    assert agent.peers.by_id[UK].config.allowed_ips == ()

    await _apply(agent, with_self(4, is_exit=True))  # approved as an exit node itself
    assert ("nft", "apply") in calls and agent.status()["node"]["exit_node"]["serving"]
    await _apply(agent, with_self(5))
    assert ("nft", "remove") in calls and not agent.status()["node"]["exit_node"]["serving"]
async def test_the_netmaps_policy_is_enforced_and_replaced_live_and_shown_in_status(agent):
    from nodeagent.protocol.policy import ALLOW_ALL, check_policy, check_rule

    ssh = check_policy("deny", [check_rule(["10.10.10.1"], ["10.10.10.2"], "tcp", [(22, 22)])])
    peers = [_peer(UK, "uk", "10.10.10.1")]
    await _apply(agent, _map(agent, 1, peers))
    assert agent.datapath.filter is None  # the default: everything allowed, nothing to ask
    assert agent.status()["node"]["policy"] == {"default": "allow", "rules": 0}
    await _apply(agent, replace(_map(agent, 2, peers), policy=ssh))
    first = agent.datapath.filter
    assert first is not None and first.policy == ssh
    assert agent.status()["node"]["policy"]["default"] == "deny"
    assert agent.status()["node"]["policy"]["rules"] == 1
    await _apply(agent, replace(_map(agent, 3, peers), policy=ssh))
    assert agent.datapath.filter is first  # the same policy: the same filter, flows and all
    agent.tick(agent.clock())
    await _apply(agent, _map(agent, 4, peers))
    assert agent.datapath.filter is None and _map(agent, 4, peers).policy == ALLOW_ALL
