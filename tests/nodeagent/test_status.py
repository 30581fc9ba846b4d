"""The `status --json` document and the counter report (status.py): the document's keys in their order
(the fixed shape others parse), the values it derives, and the report's agreement with it, read
from a real data path and peer set."""

from __future__ import annotations

import ipaddress
import json
import secrets

from nodeagent.config import PeerConfig
from nodeagent.peers import PeerSet
from nodeagent.protocol import messages
from nodeagent.protocol.counters import counters_to_dict
from nodeagent.status import node_status, peer_status, stats_report, status_document

NODE_KEYS = ["peer_id", "name", "overlay_ip", "uptime_s", "drops", "relay", "policy", "interface", "tun_gro",
             "mtu", "udp", "fragmented"]
PEER_KEYS = ["peer_id", "name", "overlay_ip", "path", "endpoint", "rtt_ms", "tx_frames", "rx_frames",
             "tx_bytes", "rx_bytes", "lost_frames", "replayed_frames", "bad_frames", "last_handshake_s",
             "denied_frames", "relayed_frames", "handshakes", "control", "allowed_ips", "path_changes",
             "handshake_timeouts", "handshake_failures", "handshake_give_ups"]
WIRE_KEYS = PEER_KEYS[:1] + PEER_KEYS[3:4] + PEER_KEYS[5:15]  # the keys that come from PeerCounters


def pc(name: str, n: int, **kw) -> PeerConfig:
    return PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(f"10.10.10.{n}"), name, **kw)


def test_the_node_part_has_the_fixed_keys_in_order(make_datapath):
    dp = make_datapath()
    dp.drops.replay = 3
    node = node_status(peer_id="ab" * 20, name="uk", overlay_ip="10.10.10.1", uptime_s=12.34567, datapath=dp,
                       relayed_handshakes=4, interface="smtest", mtu=1380, udp=dp.udp)
    assert list(node) == NODE_KEYS
    assert list(node["drops"]) == ["malformed", "unknown_session", "bad_tag", "replay", "spoofed_source",
                                   "no_route", "queue_full", "policy", "too_big"]
    assert node["drops"]["replay"] == 3 and node["uptime_s"] == 12.346
    assert node["relay"] == {"forwarded_frames": 0, "forwarded_bytes": 0, "rate_limited": 0,
                             "no_destination": 0, "handshakes": 4}
    assert node["policy"] == {"default": "allow", "rules": 0}  # no policy: nothing filtered
    assert node["tun_gro"] is None  # no vnet header on this TUN: no userspace GRO writer
    assert list(node["udp"]) == ["port", "gso", "gro", "rcvbuf", "sndbuf", "narrow_paths"]
    assert node["udp"]["narrow_paths"] == 0  # no path refused our datagrams yet
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
    hub.stats.handshake_failures.update({"wrong_peer": 1, "bad_signature": 2})
    direct = peer_status(hub, control_up=True, now=110.5)
    assert list(direct) == PEER_KEYS
    assert list(direct["handshake_failures"].items()) == [("bad_signature", 2), ("wrong_peer", 1)]
    assert direct["handshake_failures"] is not hub.stats.handshake_failures  # a copy, not the live map
    assert direct["endpoint"] == "[2001:db8::1]:9443" and direct["control"] == "up"
    assert direct["path"] == "direct" and direct["last_handshake_s"] is None
    far.hub = hub
    relayed = peer_status(far, control_up=False, now=110.5)
    assert relayed["path"] == f"relay:{hub.config.peer_id}"
    assert relayed["endpoint"] is None  # a relayed peer's own address is not where its frames go
    assert relayed["last_handshake_s"] == 10.5 and relayed["control"] == "down"
    assert relayed["allowed_ips"] == ["192.168.5.0/24"] and relayed["overlay_ip"] == "10.10.10.2"
    assert status_document({"n": 1}, [direct]) == {"node": {"n": 1}, "peers": [direct]}


def test_the_counter_report_carries_the_same_counters_as_the_document(make_datapath):
    """One builder (peer_counters) makes both: what the server stores is what `status --json` shows,
    and what it makes passes the server's strict parser."""
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    hub = peers.add(pc("hub", 1))
    far = peers.add(pc("far", 2))
    far.hub = hub
    far.last_handshake = 100.0
    hub.stats.rtt_ms = 1.25
    hub.stats.tx_frames, hub.stats.tx_bytes, hub.stats.rx_frames, hub.stats.rx_bytes = 7, 900, 5, 640
    far.stats.bad_frames, far.stats.replayed_frames, far.stats.lost_before = 2, 3, 4
    report = stats_report(12.34567, peers, now=110.5)
    assert report.uptime_s == 12.346
    entries = [peer_status(p, control_up=True, now=110.5) for p in peers]
    assert [counters_to_dict(c) for c in report.peers] == [{k: e[k] for k in WIRE_KEYS} for e in entries]
    assert report.peers[1].path == f"relay:{hub.config.peer_id}" and report.peers[1].lost_frames == 4
    assert report.peers[1].last_handshake_s == 10.5 and report.peers[0].rtt_ms == 1.25
    assert messages.decode_agent_message(messages.encode(report)) == report
