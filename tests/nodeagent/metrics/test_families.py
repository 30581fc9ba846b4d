"""The agent's metric families (metrics/families.py) from status documents: a document built by the
real status builders over a real data path and peer set, and hand-made ones for the parts that
need a running agent (handshake door, enrolled mode). The text is parsed back with
prometheus-client's own parser, so names, types and labels are checked as a scraper sees them."""

from __future__ import annotations

import ipaddress
import re
import secrets

from prometheus_client.parser import text_string_to_metric_families

from nodeagent.config import PeerConfig
from nodeagent.metrics.families import COUNTER, GAUGE, families
from nodeagent.metrics.http import render
from nodeagent.peers import PeerSet
from nodeagent.status import node_status, peer_status, status_document


def pc(name: str, n: int, **kw) -> PeerConfig:
    return PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(f"10.10.10.{n}"), name, **kw)


def parsed(doc: dict) -> dict:
    """family name -> prometheus_client Metric, from the rendered text."""
    return {m.name: m for m in text_string_to_metric_families(render(doc).decode())}


def samples(metric, suffix: str = "") -> dict:
    return {
        tuple(sorted(s.labels.items())): s.value for s in metric.samples if s.name == metric.name + suffix
    }


def real_document(make_datapath) -> tuple[dict, object, object]:
    dp = make_datapath()
    peers = PeerSet(dp, 1000)
    hub = peers.add(pc("hub", 1))
    far = peers.add(pc("far", 2, via=hub.config.peer_id))
    far.hub = hub
    hub.stats.tx_bytes, hub.stats.rx_bytes, hub.stats.tx_frames, hub.stats.rx_frames = 1500, 3000, 1, 2
    hub.stats.replayed_frames, hub.stats.bad_frames, hub.stats.handshakes = 4, 5, 6
    hub.stats.rtt_ms = 12.5
    hub.stats.path_changes = 3
    hub.stats.handshake_timeouts, hub.stats.handshake_give_ups = 12, 1
    hub.stats.handshake_failures.update({"bad_signature": 2, "challenge_expired": 1})
    hub.last_handshake = 100.0
    dp.drops.replay, dp.drops.no_route = 7, 8
    dp.relay.forwarded_frames, dp.relay.rate_limited = 9, 10
    node = node_status(
        peer_id="ab" * 20,
        name="uk",
        overlay_ip="10.10.10.9",
        uptime_s=42.0,
        datapath=dp,
        relayed_handshakes=11,
        interface="smtest",
        mtu=1380,
        udp=dp.udp,
    )
    doc = status_document(node, [peer_status(p, control_up=p is hub, now=110.0) for p in peers])
    return doc, hub, far


def test_the_status_document_of_a_real_data_path_becomes_these_families(make_datapath):
    doc, hub, far = real_document(make_datapath)
    fams = parsed(doc)
    h, f = hub.config.peer_id, far.config.peer_id
    assert samples(fams["shadowmesh_peer_tx_bytes"], "_total") == {
        (("peer", h),): 1500.0,
        (("peer", f),): 0.0,
    }
    assert fams["shadowmesh_peer_tx_bytes"].type == COUNTER
    for name, value in (
        ("rx_bytes", 3000),
        ("tx_frames", 1),
        ("rx_frames", 2),
        ("replayed_frames", 4),
        ("bad_frames", 5),
        ("handshakes", 6),
        ("path_changes", 3),
        ("handshake_timeouts", 12),
        ("handshake_give_ups", 1),
    ):
        assert samples(fams[f"shadowmesh_peer_{name}"], "_total")[(("peer", h),)] == value, name
    # handshakes by outcome: completed (above), timed out, given up, and failed by reason
    assert samples(fams["shadowmesh_peer_handshake_failures"], "_total") == {
        (("peer", h), ("reason", "bad_signature")): 2.0,
        (("peer", h), ("reason", "challenge_expired")): 1.0,
    }
    assert fams["shadowmesh_peer_handshake_failures"].type == COUNTER
    assert samples(fams["shadowmesh_peer_rtt_seconds"]) == {(("peer", h),): 0.0125}  # none measured for far
    assert fams["shadowmesh_peer_rtt_seconds"].type == GAUGE
    assert samples(fams["shadowmesh_peer_last_handshake_age_seconds"]) == {(("peer", h),): 10.0}
    assert samples(fams["shadowmesh_peer_lost_frames"])[(("peer", h),)] == 0.0
    assert fams["shadowmesh_peer_lost_frames"].type == GAUGE  # a late frame takes one back
    assert samples(fams["shadowmesh_peer_control_up"]) == {(("peer", h),): 1.0, (("peer", f),): 0.0}
    info = samples(fams["shadowmesh_peer_info"])
    assert info[(("name", "far"), ("overlay_ip", "10.10.10.2"), ("path", f"relay:{h}"), ("peer", f))] == 1.0
    drops = samples(fams["shadowmesh_drops"], "_total")
    assert drops[(("reason", "replay"),)] == 7 and drops[(("reason", "no_route"),)] == 8
    assert {dict(k)["reason"] for k in drops} == set(doc["node"]["drops"])  # every reason, zeros too
    assert samples(fams["shadowmesh_relay_forwarded_frames"], "_total") == {(): 9.0}
    assert samples(fams["shadowmesh_relay_handshakes"], "_total") == {(): 11.0}
    assert samples(fams["shadowmesh_relay_refused_frames"], "_total") == {
        (("reason", "rate_limited"),): 10.0,
        (("reason", "no_destination"),): 0.0,
    }
    assert samples(fams["shadowmesh_agent_uptime_seconds"]) == {(): 42.0}
    assert samples(fams["shadowmesh_agent_info"]) == {
        (("mode", "serverless"), ("name", "uk"), ("overlay_ip", "10.10.10.9"), ("peer_id", "ab" * 20)): 1.0
    }
    assert "shadowmesh_netmap_serial" not in fams  # enrolled mode only


def test_names_follow_the_conventions(make_datapath):
    doc, _, _ = real_document(make_datapath)
    doc["node"]["handshake"] = HANDSHAKE
    for fam in families(doc):
        assert re.fullmatch(r"shadowmesh_[a-z0-9_]+", fam.name), fam.name
        assert fam.kind in (COUNTER, GAUGE)
        assert fam.name.endswith("_total") == (fam.kind == COUNTER), fam.name
        assert not re.search(r"_(ms|milliseconds|kb|mb)(_|$)", fam.name), "base units only"
        assert fam.help
        for labels, _ in fam.samples:
            assert all(re.fullmatch(r"[a-z_]+", k) for k, _ in labels)
    assert len({f.name for f in families(doc)}) == len(families(doc))


HANDSHAKE = {
    "crypto": {"signatures": 3, "verifications": 4, "encapsulations": 1, "decapsulations": 1},
    "refused_in_links": {"link_rate": 2, "wrong_path": 1},
    "door": {
        "connections": 20,
        "rate_limited": 5,
        "displaced": 1,
        "cut": 2,
        "refused": {"bad_signature": 3, "replayed_hello": 1},
        "answered": 9,
        "waiting": 2,
    },
}


def test_handshakes_by_outcome_and_the_control_port():
    doc = {"node": {"peer_id": "ab" * 20, "name": "uk", "handshake": HANDSHAKE}, "peers": []}
    fams = parsed(doc)
    assert samples(fams["shadowmesh_handshakes_refused"], "_total") == {
        (("reason", "bad_signature"), ("where", "door")): 3.0,
        (("reason", "replayed_hello"), ("where", "door")): 1.0,
        (("reason", "link_rate"), ("where", "link")): 2.0,
        (("reason", "wrong_path"), ("where", "link")): 1.0,
    }
    assert (
        samples(fams["shadowmesh_handshake_crypto_operations"], "_total")[(("operation", "signatures"),)] == 3
    )
    assert samples(fams["shadowmesh_control_connections"], "_total") == {(): 20.0}
    assert samples(fams["shadowmesh_control_connections_closed"], "_total") == {
        (("reason", "rate_limited"),): 5.0,
        (("reason", "displaced"),): 1.0,
        (("reason", "cut"),): 2.0,
    }
    assert samples(fams["shadowmesh_handshake_challenges"], "_total") == {(): 9.0}
    assert samples(fams["shadowmesh_control_doorway_waiting"]) == {(): 2.0}


def test_enrolled_mode_adds_the_netmap_serial_and_the_server_link():
    node = {"peer_id": "ab" * 20, "name": "uk", "mode": "enrolled", "serial": 17, "server": "disconnected"}
    fams = parsed({"node": node, "peers": []})
    assert samples(fams["shadowmesh_netmap_serial"]) == {(): 17.0}
    assert samples(fams["shadowmesh_server_connected"]) == {(): 0.0}
    assert dict(next(iter(samples(fams["shadowmesh_agent_info"]))))["mode"] == "enrolled"


def test_a_new_drop_reason_appears_by_itself_and_missing_keys_leave_families_empty():
    doc = {
        "node": {"drops": {"malformed": 1, "policy": 4}},
        "peers": [{"peer_id": "cd" * 20, "rtt_ms": None}],
    }
    fams = parsed(doc)
    assert samples(fams["shadowmesh_drops"], "_total") == {
        (("reason", "malformed"),): 1.0,
        (("reason", "policy"),): 4.0,
    }
    assert samples(fams["shadowmesh_peer_tx_bytes"], "_total") == {}  # no such key in this document
    assert samples(fams["shadowmesh_peer_rtt_seconds"]) == {}
    assert samples(fams["shadowmesh_peer_path_mtu_bytes"]) == {}
    assert samples(fams["shadowmesh_fragmented_packets"], "_total") == {}
    cut = parsed({"node": {"fragmented": 3}})["shadowmesh_fragmented_packets"]
    assert samples(cut, "_total") == {(): 3.0}
    assert parsed({})  # an empty document still renders


def test_the_probed_path_mtu_is_a_gauge_marked_narrow_when_the_path_drops_bigger_packets():
    a, b, c = "aa" * 20, "bb" * 20, "cc" * 20
    doc = {"node": {}, "peers": [
        {"peer_id": a, "path_mtu": {"state": "narrow", "fits": 1216, "checked_ago_s": 3.0}},
        {"peer_id": b, "path_mtu": {"state": "ok", "fits": 1380, "checked_ago_s": 3.0}},
        {"peer_id": c, "path_mtu": {"state": "check", "fits": None, "checked_ago_s": None}},
        {"peer_id": "dd" * 20, "path_mtu": None},
    ]}
    fams = parsed(doc)
    assert fams["shadowmesh_peer_path_mtu_bytes"].type == GAUGE
    assert samples(fams["shadowmesh_peer_path_mtu_bytes"]) == {
        (("narrow", "1"), ("peer", a)): 1216.0,
        (("narrow", "0"), ("peer", b)): 1380.0,
    }


def test_label_values_are_escaped_as_prometheus_text_wants():
    doc = {
        "node": {},
        "peers": [
            {
                "peer_id": "ef" * 20,
                "name": 'a "quoted"\\ name\nnext',
                "path": "direct",
                "overlay_ip": "10.0.0.1",
            }
        ],
    }
    (labels,) = samples(parsed(doc)["shadowmesh_peer_info"])
    assert dict(labels)["name"] == 'a "quoted"\\ name\nnext'
