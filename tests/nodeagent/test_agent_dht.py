"""The DHT wired into an enrolled agent, without root: the Agent (a pipe stands in for the TUN, its
sockets on loopback) runs discovery/service.py over its own control port, against real DHT nodes
on loopback (their records signed, their certificates issued by the same CA). What the agent does
with what it learns: DHT peers, the netmap winning, revocations from a CA list (kept across a
restart), our own revocation, and the lookups a packet, a failing endpoint or an unknown HELLO
start. The namespaces tests (tests/integration/test_dht_mesh.py) run the same with the server
stopped."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.agent import Agent
from nodeagent.config import AgentConfig
from nodeagent.control.client import dial
from nodeagent.discovery.config import DhtConfig
from nodeagent.discovery.messages import Ping, Pong, decode, encode, frame_length
from nodeagent.discovery.node import DhtNode, Seed
from nodeagent.discovery.records import Candidate, build_revocation_list
from nodeagent.discovery.service import REVOCATIONS_FILE, STALE_S, Discovery
from nodeagent.enrolled import REVOKED_FILE
from nodeagent.identity import NodeIdentity
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.cert import CertFlags, issue_certificate
from nodeagent.protocol.handshake import Initiator
from nodeagent.protocol.identity import peer_id
from nodeagent.protocol.policy import ALLOW_ALL, check_policy, check_rule
from nodeagent.protocol.trust import LocalIdentity, MeshCA
from nodeagent.startup import bind_control
from nodeagent.tunnel.tun import TunDevice
from nodeagent.tunnel.udp import UdpSocket

CONFIG = DhtConfig(allow_loopback=True, maintenance_s=3600)


def _cert(ca, pk: bytes, name: str, ip: str, flags=CertFlags.NONE) -> bytes:
    now = int(time.time())
    return issue_certificate(ca, public_key=pk, name=name, network="demo", overlay_ip=ip, prefix_len=24,
                             flags=flags, not_before=now - 60, not_after=now + 3600)


class Remote:
    """Another enrolled node's DHT, on its own loopback port (its record names that port)."""

    def __init__(self, ca, name: str, ip: str) -> None:
        self.key = mldsa.MLDSA87PrivateKey.generate()
        self.pk = self.key.public_key().public_bytes_raw()
        self.peer_id = peer_id(self.pk)
        self.name, self.overlay_ip = name, ip
        self.cert = _cert(ca, self.pk, name, ip)
        self.node = DhtNode(sign=self.key.sign, certificate=self.cert,
                            ca_public_key=ca.public_key().public_bytes_raw(), candidates=(), config=CONFIG,
                            bind_ip="127.0.0.1")
        self.port = 0

    async def start(self) -> Remote:
        self.port = await self.node.listen("127.0.0.1", 0)
        self.node.set_candidates([Candidate(nm.Endpoint("127.0.0.1", self.port, 9))])
        return self

    def moves(self, port: int) -> None:
        """Its record names another control port from now on (publish() sends it out)."""
        self.node.set_candidates([Candidate(nm.Endpoint("127.0.0.1", port, 9))])

    def seed(self) -> Seed:
        return Seed("127.0.0.1", self.port, self.peer_id)

    def listed(self, endpoint_port: int | None = None) -> nm.Peer:
        return nm.Peer(peer_id=self.peer_id, name=self.name, overlay_ip=self.overlay_ip, fingerprint="0" * 64,
                       endpoints=(nm.Endpoint("127.0.0.1", endpoint_port or self.port, 9),))


class Wired:
    """An enrolled agent with its Discovery attached and its control port listening."""

    def __init__(self, tmp_path, ca=None, key=None) -> None:
        """`ca`, `key`: the network CA and node key of an agent restarted on the same state dir."""
        self.tmp = tmp_path
        self.ca = ca or mldsa.MLDSA87PrivateKey.generate()
        self.ca_public = self.ca.public_key().public_bytes_raw()
        self.key = key or mldsa.MLDSA87PrivateKey.generate()
        pk = self.key.public_key().public_bytes_raw()
        self.peer_id = peer_id(pk)
        self.cert = _cert(self.ca, pk, "belgium", "10.10.10.2")
        config = AgentConfig(path=tmp_path, name="belgium", private_key_path=tmp_path / "node.key",
                             overlay=ipaddress.ip_interface("10.10.10.2/24"),
                             listen_ip=ipaddress.ip_address("127.0.0.1"), control_port=0, udp_port=0,
                             public=False, interface="smtestnotthere", mtu=None,
                             control_socket=tmp_path / "s.sock")
        self.config = config
        self.r, self.w = os.pipe()
        self.udp = UdpSocket.open("127.0.0.1", 0)
        self.sock = bind_control("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.agent = Agent(config, NodeIdentity(self.key, pk, self.peer_id),
                           TunDevice(self.r, "smtestnotthere", False), self.udp, self.sock, 1380,
                           certificate=self.cert, ca_public_key=self.ca_public)
        self.agent.enrolled.use_state_dir(tmp_path)
        # the server link: disconnected, reporting at the agent's own interval
        self.link = SimpleNamespace(connected=asyncio.Event(), report_interval=2.0)
        self.agent.enrolled.server_link = self.link
        self.discovery = self.make_discovery()
        self.remotes: list[Remote] = []

    def make_discovery(self) -> Discovery:
        d = Discovery(state_dir=self.tmp, sign=self.key.sign, certificate=self.cert,
                      ca_public_key=self.ca_public,
                      endpoints=lambda: (nm.Endpoint("127.0.0.1", self.port, self.udp.port),), public=False,
                      overlay=self.config.overlay, enrolled=self.agent.enrolled,
                      links_up=self.agent.links.is_up, policy_rules=self.agent.policy_rules,
                      allow_loopback=True, bind_ip="127.0.0.1",
                      config=CONFIG)
        self.agent.attach_discovery(d)
        return d

    async def start(self) -> None:
        await self.agent.links.listen(self.sock)
        await self.discovery._check_endpoints()

    async def remote(self, name: str, ip: str) -> Remote:
        r = await Remote(self.ca, name, ip).start()
        self.remotes.append(r)
        return r

    def seed(self) -> Seed:
        return Seed("127.0.0.1", self.port, self.peer_id)

    async def apply(self, *peers: nm.Peer, serial: int = 1, revoked=(), revocation_list=None,
                    policy=ALLOW_ALL) -> None:
        me = nm.SelfInfo(peer_id=self.peer_id, name="belgium", overlay_ip="10.10.10.2", prefix_len=24)
        netmap = nm.NetMap(network="demo", serial=serial, node=me,
                           peers=tuple(sorted(peers, key=lambda p: p.peer_id)), revoked=tuple(revoked),
                           revocation_list=revocation_list, policy=policy)
        await self.agent.enrolled.apply_netmap(netmap)

    def revocations(self, *peer_ids: str, sequence: int = 1) -> bytes:
        now = int(time.time())
        return build_revocation_list(self.ca.sign, ca_public_key=self.ca_public, sequence=sequence,
                                     issued=now, expires=now + 3600, revoked=peer_ids)

    async def close(self) -> None:
        self.agent.links.close_all()
        await self.discovery.close()
        for r in self.remotes:
            await r.node.close()
        for task in list(self.agent.tasks):
            task.cancel()
        await asyncio.gather(*self.agent.tasks, return_exceptions=True)
        self.agent.workers.close()
        self.udp.close()
        self.sock.close()
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
async def wired(tmp_path):
    w = Wired(tmp_path)
    await w.start()
    try:
        yield w
    finally:
        await w.close()


async def until(predicate, what: str, timeout: float = 10.0):
    """Poll until predicate() is truthy: the deadline is a failure condition, not a speed claim."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _peer_ids(w: Wired) -> set[str]:
    return set(w.agent.peers.by_id)


# ----------------------------------------------------------------------------- the shared port


async def test_a_dht_request_on_the_control_port_is_answered_by_the_dht(wired):
    reader, writer = await asyncio.open_connection("127.0.0.1", wired.port)
    writer.write(encode(Ping(7, want=True)))
    header = await asyncio.wait_for(reader.readexactly(4), 10)
    answer = decode(await asyncio.wait_for(reader.readexactly(frame_length(header)), 10))
    writer.close()
    assert isinstance(answer, Pong) and answer.rid == 7
    assert wired.discovery.node.verifier.node_record(answer.you, time.time()).peer_id == wired.peer_id
    door = wired.agent.status()["node"]["handshake"]["door"]
    assert door["dht"] == 1 and door["waiting"] == 0 and door["refused"] == {}


async def test_status_and_the_counter_report_carry_the_dht_object(wired):
    dht = wired.agent.status()["node"]["dht"]
    assert list(dht) == ["contacts", "records", "last_publish_s", "lookups", "failures", "peers"]
    assert dht["contacts"] == 0 and dht["last_publish_s"] is None and dht["peers"] == 0
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(uk.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])  # joins: looks itself up, publishes
    dht = wired.agent.status()["node"]["dht"]
    assert dht["contacts"] == 1 and dht["lookups"] >= 1 and dht["last_publish_s"] is not None
    report = wired.agent.stats_report().dht
    assert (report.contacts, report.lookups, report.failures) == (1, dht["lookups"], dht["failures"])


# ----------------------------------------------------------------------------- DHT peers


async def test_with_the_server_away_a_node_the_netmap_lacks_becomes_a_known_peer(wired):
    hub = await wired.remote("uk", "10.10.10.1")
    await wired.apply(hub.listed())
    newcomer = await wired.remote("mac", "10.10.10.4")
    assert await newcomer.node.bootstrap([wired.seed()])  # its first request carries its record
    await until(lambda: newcomer.peer_id in _peer_ids(wired), "the newcomer becomes a peer")
    peer = wired.agent.peers.get(newcomer.peer_id)
    assert peer.config.overlay_ip == ipaddress.ip_address("10.10.10.4")  # its certificate's address
    assert peer.config.endpoint == ("127.0.0.1", newcomer.port) and peer.config.via is None
    trust = wired.agent.handshakes.trust
    assert trust.knows(newcomer.peer_id) and trust.knows(hub.peer_id)
    assert wired.agent.datapath.route(ipaddress.ip_address("10.10.10.4").packed) is peer
    assert wired.agent.datapath.route(ipaddress.ip_address("10.10.10.1").packed).config.peer_id == hub.peer_id
    assert wired.agent.status()["node"]["dht"]["peers"] == 1


async def test_while_the_server_is_connected_the_dht_adds_no_peer(wired):
    hub = await wired.remote("uk", "10.10.10.1")
    wired.link.connected.set()
    await wired.apply(hub.listed())
    newcomer = await wired.remote("mac", "10.10.10.4")
    assert await newcomer.node.bootstrap([wired.seed()])
    await until(lambda: wired.discovery.ignored.get("server_connected"), "the record is looked at")
    assert _peer_ids(wired) == {hub.peer_id} and not wired.agent.handshakes.trust.knows(newcomer.peer_id)


async def test_the_servers_netmap_takes_over_dht_peers(wired):
    mac = await wired.remote("mac", "10.10.10.4")
    starlink = await wired.remote("starlink", "10.10.10.3")
    await wired.apply()  # the persisted map: neither of them
    for r in (mac, starlink):
        assert await r.node.bootstrap([wired.seed()])
    await until(lambda: _peer_ids(wired) == {mac.peer_id, starlink.peer_id}, "both are DHT peers")
    mac_peer = wired.agent.peers.get(mac.peer_id)
    wired.link.connected.set()  # the server is back: its map lists mac, not starlink
    await wired.apply(mac.listed(endpoint_port=4444), serial=2)
    assert _peer_ids(wired) == {mac.peer_id}
    assert wired.agent.peers.get(mac.peer_id) is mac_peer  # the same peer, now the netmap's
    assert mac_peer.config.endpoint == ("127.0.0.1", 4444) and wired.agent.enrolled.dht_peers == set()
    assert not wired.agent.handshakes.trust.knows(starlink.peer_id)
    assert wired.agent.datapath.route(ipaddress.ip_address("10.10.10.3").packed) is None
    assert len(wired.agent.peers) == 1  # no duplicate


async def test_a_dht_peer_cannot_take_a_netmap_peers_overlay_address(wired):
    hub = await wired.remote("uk", "10.10.10.1")
    await wired.apply(hub.listed())
    squatter = await wired.remote("evil", "10.10.10.1")  # the CA gave the address out again
    assert await squatter.node.bootstrap([wired.seed()])
    await until(lambda: wired.discovery.ignored.get("address_taken"), "the record is looked at")
    assert _peer_ids(wired) == {hub.peer_id}


async def test_a_node_the_netmaps_policy_does_not_name_is_not_made_a_peer(wired):
    """The map (persisted: the server is away) filters: its rules let mac (10.10.10.4) reach us,
    and us reach the hub; starlink (10.10.10.3), enrolled and unrevoked, is named by no rule. Its
    record makes it no peer and its HELLO is refused; mac's makes mac one."""
    hub = await wired.remote("uk", "10.10.10.1")
    policy = check_policy("deny", [check_rule(["10.10.10.4/32"], ["10.10.10.2/32"], "tcp", [(22, 22)]),
                                   check_rule(["10.10.10.2/32"], ["10.10.10.1/32"], "any", [])])
    await wired.apply(hub.listed(), policy=policy)
    assert wired.agent.policy_rules() is wired.agent.datapath.filter.index  # what the data path enforces
    starlink = await wired.remote("starlink", "10.10.10.3")
    assert await starlink.node.bootstrap([wired.seed()])
    await until(lambda: wired.discovery.ignored.get("policy"), "starlink's record is looked at")
    mac = await wired.remote("mac", "10.10.10.4")
    assert await mac.node.bootstrap([wired.seed()])
    await until(lambda: mac.peer_id in _peer_ids(wired), "mac becomes a peer")
    assert _peer_ids(wired) == {hub.peer_id, mac.peer_id} and wired.agent.enrolled.dht_peers == {mac.peer_id}
    trust = wired.agent.handshakes.trust
    assert trust.knows(mac.peer_id) and not trust.knows(starlink.peer_id)
    assert wired.agent.datapath.route(ipaddress.ip_address("10.10.10.3").packed) is None
    starlink_local = LocalIdentity(starlink.key, starlink.cert)
    assert await dial("127.0.0.1", wired.port, lambda: Initiator(
        starlink_local, MeshCA(wired.ca_public), wired.peer_id, time.time())) is None
    await until(lambda: wired.discovery.ignored.get("policy", 0) >= 2, "its HELLO's lookup is refused too")
    assert starlink.peer_id not in _peer_ids(wired)


# ----------------------------------------------------------------------------- endpoints: the netmap wins


async def test_a_netmap_endpoint_gives_way_only_once_it_stops_answering(wired):
    hub = await wired.remote("hub", "10.10.10.9")
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(hub.listed(), uk.listed())
    assert await wired.discovery.node.bootstrap([hub.seed()])
    assert await uk.node.bootstrap([hub.seed()])
    uk.moves(5555)  # its new address: no longer where the netmap says
    assert await uk.node.publish() >= 2  # stored at the hub and at the agent: on_record hears it
    await until(lambda: wired.discovery.ignored.get("netmap_wins"), "the newer record is looked at")
    assert wired.agent.peers.get(uk.peer_id).config.endpoint == ("127.0.0.1", uk.port)
    # no control link for STALE_S: its endpoint stopped answering; the lookup brings the new one
    wired.discovery.down_since[uk.peer_id] = time.monotonic() - STALE_S - 1
    wired.discovery._watch_links()
    await until(lambda: wired.agent.peers.get(uk.peer_id).config.endpoint == ("127.0.0.1", 5555),
                "the record's endpoint is dialed")
    assert wired.agent.status()["node"]["dht"]["lookups"] >= 1


async def test_the_servers_next_map_puts_the_netmap_endpoint_back(wired):
    """uk moved while the server was away and its record's endpoint is dialed; the server comes
    back with a map that does not change uk (the same endpoint as before): uk is dialed at the
    map's endpoint again, and while the server is connected a peer without a link is not looked
    up (its map decides; NAT traversal reaches a peer behind a NAT through a hub)."""
    hub = await wired.remote("hub", "10.10.10.9")
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(hub.listed(), uk.listed())
    assert await wired.discovery.node.bootstrap([hub.seed()])
    assert await uk.node.bootstrap([hub.seed()])
    uk.moves(5555)
    assert await uk.node.publish() >= 2
    wired.discovery.down_since[uk.peer_id] = time.monotonic() - STALE_S - 1
    wired.discovery._watch_links()
    await until(lambda: wired.agent.peers.get(uk.peer_id).config.endpoint == ("127.0.0.1", 5555),
                "the record's endpoint is dialed")
    wired.link.connected.set()  # the server is back; its map lists uk where it was
    await wired.apply(hub.listed(), uk.listed(), serial=2)
    assert wired.agent.peers.get(uk.peer_id).config.endpoint == ("127.0.0.1", uk.port)
    assert wired.agent.enrolled.dht_endpoints == set()
    wired.discovery.throttle.forget(("peer", uk.peer_id))
    wired.discovery.down_since[uk.peer_id] = time.monotonic() - STALE_S - 1
    await until(lambda: not wired.discovery._tasks, "the earlier lookup is done")
    wired.discovery._watch_links()
    assert not wired.discovery._tasks  # no lookup while the server's map decides
    assert wired.agent.peers.get(uk.peer_id).config.endpoint == ("127.0.0.1", uk.port)


# ----------------------------------------------------------------------------- revocations


async def test_a_ca_list_from_the_dht_drops_the_peer_and_outlives_a_restart(wired, tmp_path):
    uk = await wired.remote("uk", "10.10.10.1")
    mac = await wired.remote("mac", "10.10.10.4")
    await wired.apply(uk.listed(), mac.listed())
    assert mac.peer_id in _peer_ids(wired)
    # the server is away; a node that got the list from its netmap spreads it
    assert await wired.discovery.node.bootstrap([uk.seed()])
    uk.node.learn_revocations(wired.revocations(mac.peer_id))
    assert await uk.node.spread_revocations() >= 1
    await until(lambda: mac.peer_id not in _peer_ids(wired), "mac is dropped")
    trust = wired.agent.handshakes.trust
    assert mac.peer_id in trust.revoked and not trust.knows(mac.peer_id)
    assert wired.agent.status()["node"]["revoked_peers"] == [mac.peer_id]
    kept = json.loads((tmp_path / REVOCATIONS_FILE).read_text())
    assert kept["revoked"] == [mac.peer_id] and kept["list"]
    assert oct((tmp_path / REVOCATIONS_FILE).stat().st_mode & 0o777) == "0o600"
    # a restarted agent: the revoked set is read back before its persisted netmap (which still
    # lists mac) is applied, and the map does not bring mac back
    restarted = Wired(tmp_path, ca=wired.ca, key=wired.key)
    try:
        assert mac.peer_id in restarted.agent.handshakes.trust.revoked
        assert restarted.discovery.revoked.latest is not None  # the list too: served again from here
        await restarted.apply(uk.listed(), mac.listed())
        assert _peer_ids(restarted) == {uk.peer_id}
        assert not restarted.agent.handshakes.trust.knows(mac.peer_id)
    finally:
        await restarted.close()


async def test_the_list_a_netmap_carries_is_applied_served_and_spread(wired):
    """The server's map carries the CA's list: a peer it names is dropped even while the map still
    lists it (a revocation the map's own section has not caught up with), and the list is stored in
    the DHT, where a node that never saw the server finds it."""
    uk = await wired.remote("uk", "10.10.10.1")
    mac = await wired.remote("mac", "10.10.10.4")
    await wired.apply(uk.listed(), mac.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])
    await wired.apply(uk.listed(), mac.listed(), serial=2, revocation_list=wired.revocations(mac.peer_id))
    assert _peer_ids(wired) == {uk.peer_id} and mac.peer_id in wired.agent.handshakes.trust.revoked
    await until(lambda: mac.peer_id in uk.node.revoked, "the list reaches uk through the DHT")
    newcomer = await wired.remote("starlink", "10.10.10.3")
    assert await newcomer.node.bootstrap([wired.seed()])  # bootstrap fetches the list
    assert mac.peer_id in newcomer.node.revoked
    # a list that does not verify is not used (and named in the log)
    bad = bytearray(wired.revocations(uk.peer_id, sequence=5))
    bad[-3] ^= 1
    await wired.apply(uk.listed(), serial=3, revocation_list=bytes(bad))
    assert uk.peer_id in _peer_ids(wired) and uk.peer_id not in wired.agent.handshakes.trust.revoked


async def test_our_own_id_on_the_cas_list_means_we_were_revoked(wired, tmp_path):
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(uk.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])
    uk.node.learn_revocations(wired.revocations(wired.peer_id))  # uk dropped us: it stores nothing here
    assert await wired.discovery.node.fetch_revocations() is not None  # (on join, every 30 minutes)
    assert wired.agent.enrolled.revoked_self
    assert _peer_ids(wired) == set() and (tmp_path / REVOKED_FILE).exists()
    assert "CA" in (tmp_path / REVOKED_FILE).read_text()
    assert wired.agent.status()["node"]["server"] == "revoked"
    assert wired.agent.status()["node"]["stats_interval_s"] == 2.0


# ----------------------------------------------------------------------------- lookups the agent starts


async def test_a_packet_to_an_unheld_overlay_address_looks_it_up(wired):
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(uk.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])
    wired.link.connected.set()  # (connected while mac joins: its record alone adds no peer)
    mac = await wired.remote("mac", "10.10.10.4")
    assert await mac.node.bootstrap([uk.seed()])
    await until(lambda: wired.discovery.ignored.get("server_connected"), "mac's record is looked at")
    wired.discovery.no_route(ipaddress.ip_address("10.10.10.4").packed)  # the server's map decides
    assert not wired.discovery._tasks
    wired.link.connected.clear()  # the server goes away
    lookups = wired.discovery.node.stats.lookups
    wired.discovery.no_route(ipaddress.ip_address("192.168.1.1").packed)  # not the overlay: nothing
    wired.discovery.no_route(ipaddress.ip_address("10.10.10.2").packed)  # our own: nothing
    assert wired.discovery.node.stats.lookups == lookups and not wired.discovery._tasks
    wired.discovery.no_route(ipaddress.ip_address("10.10.10.4").packed)
    wired.discovery.no_route(ipaddress.ip_address("10.10.10.4").packed)  # throttled: one lookup
    assert len(wired.discovery._tasks) == 1
    await until(lambda: mac.peer_id in _peer_ids(wired), "mac becomes a peer")
    assert wired.agent.datapath.route(ipaddress.ip_address("10.10.10.4").packed).config.peer_id == mac.peer_id


async def test_a_hello_from_an_unknown_peer_id_looks_it_up_and_the_next_one_is_accepted(wired):
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(uk.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])
    wired.link.connected.set()
    mac = await wired.remote("mac", "10.10.10.4")
    assert await mac.node.bootstrap([uk.seed()])
    await until(lambda: wired.discovery.ignored.get("server_connected"), "mac's record is looked at")
    wired.link.connected.clear()
    mac_local = LocalIdentity(mac.key, mac.cert)
    mac_trust = MeshCA(wired.ca_public)

    async def mac_dials():
        return await dial("127.0.0.1", wired.port,
                          lambda: Initiator(mac_local, mac_trust, wired.peer_id, time.time()))

    assert await mac_dials() is None  # refused: unknown, but its id is looked up
    await until(lambda: mac.peer_id in _peer_ids(wired), "mac becomes a peer")
    result = await mac_dials()
    assert result is not None and result[3].peer.peer_id == wired.peer_id
    result[1].close()
    assert wired.agent.status()["node"]["handshake"]["door"]["refused"] == {"unknown_peer": 1}


async def test_a_renewed_certificate_goes_into_our_next_record(wired):
    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(uk.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])
    pk = wired.key.public_key().public_bytes_raw()
    renewed = _cert(wired.ca, pk, "belgium", "10.10.10.2")
    assert renewed != wired.cert
    wired.discovery.certificate_renewed(renewed)
    assert await wired.discovery.node.publish() >= 2
    seen = await uk.node.find_record(wired.peer_id)
    assert seen.certificate.to_bytes() == renewed
    wired.discovery.certificate_renewed(_cert(wired.ca, pk, "belgium", "10.10.10.7"))  # not a renewal
    assert wired.discovery.node.certificate == renewed


# ----------------------------------------------------------------------------- NAT traversal's candidates


def _cand(kind, ip: str, port: int):
    from nodeagent.paths.candidates import Candidate as UdpCandidate

    return UdpCandidate(kind, ip, port)


async def test_our_udp_candidates_go_into_our_record_and_are_published(wired):
    """NAT traversal reports our candidates (an interface address, what a hub saw of our data
    port): the record carries them with their kinds, the advertised endpoint first, and the change
    is published like a move."""
    from nodeagent.discovery.records import KIND_LOCAL, KIND_REFLEXIVE, KIND_REPORTED
    from nodeagent.protocol.disco import CandidateKind

    uk = await wired.remote("uk", "10.10.10.1")
    await wired.apply(uk.listed())
    assert await wired.discovery.node.bootstrap([uk.seed()])
    wired.agent._report_candidates([_cand(CandidateKind.LOCAL, "198.19.0.7", 41001),
                                    _cand(CandidateKind.REFLEXIVE, "198.18.5.5", 40000)])
    assert wired.discovery._publish_wanted  # (the upkeep loop publishes it within ENDPOINT_CHECK_S)
    await wired.discovery._publish()
    assert not wired.discovery._publish_wanted  # stored under both keys
    seen = await uk.node.find_record(wired.peer_id)
    kinds = [(c.kind, c.endpoint.ip, c.endpoint.udp_port) for c in seen.candidates]
    assert kinds == [(KIND_REPORTED, "127.0.0.1", wired.udp.port), (KIND_REFLEXIVE, "198.18.5.5", 40000),
                     (KIND_LOCAL, "198.19.0.7", 41001)]
    assert all(c.endpoint.control_port == wired.port for c in seen.candidates)
    # the same candidates again: no new record
    record = wired.discovery.node.own_record
    wired.agent._report_candidates([_cand(CandidateKind.LOCAL, "198.19.0.7", 41001),
                                    _cand(CandidateKind.REFLEXIVE, "198.18.5.5", 40000)])
    assert not wired.discovery._publish_wanted and wired.discovery.node.own_record is record


async def test_a_dht_peers_udp_candidates_come_from_its_record(wired):
    """A node the netmap lacks, behind a NAT: its record's candidates become the peer's UDP
    candidates, which NAT traversal punches to; a newer record replaces them."""
    from nodeagent.discovery.records import KIND_REFLEXIVE

    await wired.apply()
    newcomer = await wired.remote("mac", "10.10.10.4")
    newcomer.node.set_candidates([Candidate(nm.Endpoint("127.0.0.1", newcomer.port, 9)),
                                  Candidate(nm.Endpoint("198.18.9.9", newcomer.port, 40000, "reflexive"),
                                            KIND_REFLEXIVE)])
    assert await newcomer.node.bootstrap([wired.seed()])
    await until(lambda: newcomer.peer_id in _peer_ids(wired), "the newcomer becomes a peer")
    peer = wired.agent.peers.get(newcomer.peer_id)
    assert peer.config.candidates == (("reported", "127.0.0.1", 9), ("reflexive", "198.18.9.9", 40000))
    newcomer.node.set_candidates([Candidate(nm.Endpoint("127.0.0.1", 6666, 9)),
                                  Candidate(nm.Endpoint("198.18.9.10", 6666, 40002, "reflexive"),
                                            KIND_REFLEXIVE)])
    assert await newcomer.node.publish() >= 1
    await until(lambda: wired.agent.peers.get(newcomer.peer_id).config.endpoint == ("127.0.0.1", 6666),
                "the newer record's endpoint")
    assert wired.agent.peers.get(newcomer.peer_id).config.candidates == (
        ("reported", "127.0.0.1", 9), ("reflexive", "198.18.9.10", 40002))


def test_record_candidates_keep_the_advertised_then_reflexive_ones_under_the_cap():
    from nodeagent.discovery.records import KIND_LOCAL, KIND_REFLEXIVE, KIND_REPORTED, MAX_CANDIDATES
    from nodeagent.discovery.service import record_candidates

    local = [nm.Endpoint(f"198.19.0.{i}", 9443, 9444, "local") for i in range(1, 10)]
    reflexive = [nm.Endpoint("198.18.1.1", 9443, 40000 + i, "reflexive") for i in range(2)]
    base = nm.Endpoint("198.18.0.1", 9443, 9444)
    got = record_candidates((base, *local, *reflexive))
    assert len(got) == MAX_CANDIDATES
    assert [c.kind for c in got] == [KIND_REPORTED, KIND_REFLEXIVE, KIND_REFLEXIVE] + [KIND_LOCAL] * 5
    assert [c.endpoint for c in got[3:]] == local[:5]  # each kind keeps its order


def test_with_candidates_is_what_the_server_and_the_record_get():
    from nodeagent.enrolled import MAX_REPORTED_ENDPOINTS, with_candidates
    from nodeagent.protocol.disco import CandidateKind

    base = (nm.Endpoint("198.18.0.1", 9443, 9444),)
    ours = [_cand(CandidateKind.LOCAL, "198.18.0.1", 9444),  # the advertised one again: not twice
            _cand(CandidateKind.LOCAL, "198.19.0.2", 9444),
            _cand(CandidateKind.REFLEXIVE, "198.18.7.7", 1234)]
    assert with_candidates(base, ours) == (base[0], nm.Endpoint("198.19.0.2", 9443, 9444, "local"),
                                           nm.Endpoint("198.18.7.7", 9443, 1234, "reflexive"))
    assert with_candidates((), ours) == ()  # nothing advertised: nothing reported or published
    many = [_cand(CandidateKind.LOCAL, f"198.19.1.{i}", 9444) for i in range(1, 40)]
    assert len(with_candidates(base, many)) == MAX_REPORTED_ENDPOINTS


async def test_a_move_is_reported_to_the_server_with_our_candidates(wired):
    """Start-up wires on_endpoints to enrolled mode: the advertised endpoint computed again (the
    node moved) goes to the server link with our UDP candidates, as a change of the candidates does."""
    from nodeagent.protocol.disco import CandidateKind

    sent = []
    wired.link.update_endpoints = sent.append
    mode = wired.agent.enrolled
    old = nm.Endpoint("127.0.0.1", wired.port, wired.udp.port)
    mode.base_endpoints = (old,)
    wired.discovery.on_endpoints = mode.set_base_endpoints
    wired.agent._report_candidates([_cand(CandidateKind.REFLEXIVE, "198.18.5.5", 40000)])
    assert sent == [(old, nm.Endpoint("198.18.5.5", wired.port, 40000, "reflexive"))]
    await wired.discovery._check_endpoints()  # unchanged: nothing sent
    assert len(sent) == 1
    new = nm.Endpoint("127.0.0.2", wired.port, wired.udp.port)
    wired.discovery.endpoints_now = lambda: (new,)
    await wired.discovery._check_endpoints()
    assert sent[-1] == (new, nm.Endpoint("198.18.5.5", wired.port, 40000, "reflexive"))
    assert wired.discovery.endpoints == sent[-1]  # the record carries the same
