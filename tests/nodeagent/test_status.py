"""The `status --json` document (status.py): its keys in their order (the fixed shape others parse),
and the values it derives, read from a real data path and peer set."""

from __future__ import annotations

import ipaddress
import json
import secrets

from nodeagent.config import PeerConfig
from nodeagent.peers import PeerSet
from nodeagent.status import node_status, peer_status, status_document

NODE_KEYS = ["peer_id", "name", "overlay_ip", "uptime_s", "drops", "relay", "interface", "tun_gro", "mtu",
             "udp"]
PEER_KEYS = ["peer_id", "name", "overlay_ip", "path", "endpoint", "rtt_ms", "tx_frames", "rx_frames",
             "tx_bytes", "rx_bytes", "lost_frames", "replayed_frames", "bad_frames", "last_handshake_s",
             "relayed_frames", "handshakes", "control", "allowed_ips"]


def pc(name: str, n: int, **kw) -> PeerConfig:
    return PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(f"10.10.10.{n}"), name, **kw)


def test_the_node_part_has_the_fixed_keys_in_order(make_datapath):
    dp = make_datapath()
    dp.drops.replay = 3
    node = node_status(peer_id="ab" * 20, name="uk", overlay_ip="10.10.10.1", uptime_s=12.34567, datapath=dp,
                       relayed_handshakes=4, interface="smtest", mtu=1380, udp=dp.udp)
    assert list(node) == NODE_KEYS
    assert list(node["drops"]) == ["malformed", "unknown_session", "bad_tag", "replay", "spoofed_source",
                                   "no_route", "queue_full"]
    assert node["drops"]["replay"] == 3 and node["uptime_s"] == 12.346
    assert node["relay"] == {"forwarded_frames": 0, "forwarded_bytes": 0, "rate_limited": 0,
                             "no_destination": 0, "handshakes": 4}
    assert node["tun_gro"] is None  # no vnet header on this TUN: no userspace GRO writer
    assert list(node["udp"]) == ["port", "gso", "gro", "rcvbuf", "sndbuf"]
    assert node["udp"]["port"] == dp.udp.port
    json.dumps(status_document(node, []))  # all of it is JSON


def test_a_peer_entry_has_the_fixed_keys_and_derived_values(make_datapath):
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    hub = peers.add(pc("hub", 1))
    far = peers.add(pc("far", 2, allowed_ips=(ipaddress.ip_network("192.168.5.0/24"),)))
    hub.endpoint = ("2001:db8::1", 9443)
    far.endpoint = ("198.18.0.9", 9443)
    far.last_handshake = 100.0
    direct = peer_status(hub, control_up=True, now=110.5)
    assert list(direct) == PEER_KEYS
    assert direct["endpoint"] == "[2001:db8::1]:9443" and direct["control"] == "up"
    assert direct["path"] == "direct" and direct["last_handshake_s"] is None
    far.hub = hub
    relayed = peer_status(far, control_up=False, now=110.5)
    assert relayed["path"] == f"relay:{hub.config.peer_id}"
    assert relayed["endpoint"] is None  # a relayed peer's own address is not where its frames go
    assert relayed["last_handshake_s"] == 10.5 and relayed["control"] == "down"
    assert relayed["allowed_ips"] == ["192.168.5.0/24"] and relayed["overlay_ip"] == "10.10.10.2"
    assert status_document({"n": 1}, [direct]) == {"node": {"n": 1}, "peers": [direct]}
