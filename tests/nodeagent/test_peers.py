"""The peer set (peers.py) on a real data path: the list and indexes the data path reads, the routing
table, and the listeners told about every change, in the order they registered."""

from __future__ import annotations

import ipaddress
import logging
import secrets

from nodeagent.config import PeerConfig
from nodeagent.peers import PeerSet
from nodeagent.protocol.keys import Keypair


def pc(name: str, n: int, **kw) -> PeerConfig:
    return PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(f"10.10.10.{n}"), name, **kw)


class Recorder:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def peer_added(self, peer):
        self.log.append((self.name, "added", peer.config.name))

    def peer_removed(self, peer, revoked):
        self.log.append((self.name, "removed", peer.config.name, revoked))

    def peer_changed(self, peer, old_config, reset_sessions):
        self.log.append((self.name, "changed", old_config.name, peer.config.name, reset_sessions))


def hop(dp, address: str):
    peer = dp.route(ipaddress.ip_address(address).packed)
    return None if peer is None else peer.config.name


def keys(dp, peer, index: int) -> Keypair:
    kp = Keypair(bytes(32), bytes(32), local_index=index, remote_index=index + 1, created_at=dp.clock(),
                 initiator=True)
    dp.install(peer, kp, confirmed=True)
    return kp


def test_a_peer_joins_the_data_paths_list_indexes_and_table(make_datapath):
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    uk = peers.add(pc("uk", 1, allowed_ips=(ipaddress.ip_network("192.168.5.0/24"),)))
    assert dp.peers == [uk] and peers.peers is dp.peers  # one list, shared
    assert peers.get(uk.config.peer_id) is uk and dp.by_id[uk.id_bytes] is uk
    assert uk in peers and len(peers) == 1 and list(peers) == [uk]
    assert hop(dp, "10.10.10.1") == "uk" and hop(dp, "192.168.5.9") == "uk"


def test_listeners_hear_every_change_in_registration_order(make_datapath):
    events: list = []
    peers = PeerSet(make_datapath(), 1000)
    peers.listeners.extend([Recorder("first", events), Recorder("second", events)])
    config = pc("uk", 1)
    peers.add(config)
    peers.update(PeerConfig(b"", config.peer_id, config.overlay_ip, "uk2"), reset_sessions=True)
    peers.remove(config.peer_id, revoked=True)
    assert events == [
        ("first", "added", "uk"), ("second", "added", "uk"),
        ("first", "changed", "uk", "uk2", True), ("second", "changed", "uk", "uk2", True),
        ("first", "removed", "uk2", True), ("second", "removed", "uk2", True),
    ]


def test_unknown_peers_are_neither_updated_nor_removed(make_datapath):
    events: list = []
    peers = PeerSet(make_datapath(), 1000)
    peers.listeners.append(Recorder("only", events))
    stranger = pc("stranger", 9)
    peers.update(stranger)
    peers.remove(stranger.peer_id)
    assert events == [] and len(peers) == 0


def test_a_removed_peer_loses_its_keys_parked_packets_and_routes(make_datapath):
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    uk = peers.add(pc("uk", 1))
    kp = keys(dp, uk, 40)
    uk.pending.append(b"parked")
    peers.remove(uk.config.peer_id)
    assert kp.wiped and 40 not in dp.sessions and not uk.pending
    assert dp.peers == [] and uk.id_bytes not in dp.by_id and hop(dp, "10.10.10.1") is None


def test_an_identity_change_wipes_the_keys_a_plain_update_keeps_them(make_datapath):
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    config = pc("uk", 1)
    uk = peers.add(config)
    kp = keys(dp, uk, 50)
    moved = PeerConfig(b"", config.peer_id, ipaddress.ip_address("10.10.10.7"), "uk")
    peers.update(moved)
    assert uk.config is moved and not kp.wiped and hop(dp, "10.10.10.7") == "uk"
    assert hop(dp, "10.10.10.1") is None
    peers.update(config, reset_sessions=True)
    assert kp.wiped and 50 not in dp.sessions and hop(dp, "10.10.10.1") == "uk"


def test_a_conflicting_table_is_refused_and_the_old_one_kept(make_datapath, caplog):
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    net = ipaddress.ip_network("192.168.5.0/24")
    peers.add(pc("uk", 1, allowed_ips=(net,)))
    with caplog.at_level(logging.ERROR, logger="nodeagent.peers"):
        peers.add(pc("mac", 2, allowed_ips=(net,)))
    assert "routing table not changed" in caplog.text
    assert hop(dp, "192.168.5.1") == "uk" and hop(dp, "10.10.10.2") is None
