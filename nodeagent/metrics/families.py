"""The agent's Prometheus metrics, read from one `status --json` document. Pure.

`families(doc)` turns the document the agent already builds for `status --json` (status.py, from
the data path's own counters) into metric families: there is no second set of counters, and
nothing is counted per packet for metrics. A scrape costs one status document. The names follow
Prometheus conventions: base units in the name (`_bytes`, `_seconds`), counters end in `_total`,
per-peer series carry `peer="<peer id>"`, and per-reason ones `reason="<reason>"`. The list with
types and labels is in docs/operations.md#agent-metrics.

Keys the document does not have (an older agent, a field another part of the agent has not added
yet) leave their family empty rather than failing the scrape; a drop or refusal reason that is
added to the document later appears as a new `reason` value by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["COUNTER", "GAUGE", "Family", "families"]

COUNTER = "counter"
GAUGE = "gauge"

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Family:
    """One metric family: `name` is the sample name (a counter's ends in `_total`)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)

    def add(self, value: object, **labels: str) -> None:
        """One sample; a missing or non-numeric value (None: not measured yet) adds nothing."""
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)):
            self.samples.append((tuple(labels.items()), float(value)))


# (family name, status key of a peer entry, help): counters that only ever grow
PEER_COUNTERS = (
    ("shadowmesh_peer_tx_bytes_total", "tx_bytes", "Bytes of data frames sent to the peer."),
    (
        "shadowmesh_peer_rx_bytes_total",
        "rx_bytes",
        "Bytes of authenticated data frames received from the peer.",
    ),
    ("shadowmesh_peer_tx_frames_total", "tx_frames", "Data frames sent to the peer."),
    ("shadowmesh_peer_rx_frames_total", "rx_frames", "Authenticated data frames received from the peer."),
    (
        "shadowmesh_peer_replayed_frames_total",
        "replayed_frames",
        "Frames from the peer refused as replays (duplicates or older than the replay window).",
    ),
    (
        "shadowmesh_peer_bad_frames_total",
        "bad_frames",
        "Frames for the peer's session that failed authentication.",
    ),
    ("shadowmesh_peer_handshakes_total", "handshakes", "Data-key handshakes completed with the peer."),
    (
        "shadowmesh_peer_handshake_timeouts_total",
        "handshake_timeouts",
        "Our handshake attempts with the peer that brought no keys within the retry time (each is "
        "retried; an attempt whose CHALLENGE failed ends so too).",
    ),
    (
        "shadowmesh_peer_handshake_give_ups_total",
        "handshake_give_ups",
        "Handshake series with the peer given up (no keys after REKEY_ATTEMPT_TIME; packets queued "
        "for it dropped).",
    ),
    (
        "shadowmesh_peer_relayed_frames_total",
        "relayed_frames",
        "Frames this node forwarded on behalf of the peer (hub role).",
    ),
    (
        "shadowmesh_peer_path_changes_total",
        "path_changes",
        "Changes of the path to the peer (direct or through a relay) since the agent started.",
    ),
)


Doc = Mapping[str, object]


def _map(value: object) -> Doc:
    """A part of the document that should be an object; {} when it is absent or something else."""
    return value if isinstance(value, Mapping) else {}


def _peer_families(peers: list[Doc]) -> list[Family]:
    counters = [Family(name, COUNTER, text) for name, _, text in PEER_COUNTERS]
    lost = Family(
        "shadowmesh_peer_lost_frames",
        GAUGE,
        "Frames from the peer that never came (gaps in its counters); a late frame that fills "
        "a gap takes one back, so this is a gauge.",
    )
    rtt = Family(
        "shadowmesh_peer_rtt_seconds", GAUGE, "Last measured round trip to the peer (echo keepalive)."
    )
    age = Family(
        "shadowmesh_peer_last_handshake_age_seconds",
        GAUGE,
        "Seconds since the last completed data-key handshake with the peer.",
    )
    control = Family("shadowmesh_peer_control_up", GAUGE, "1 while a control link with the peer is up.")
    failures = Family(
        "shadowmesh_peer_handshake_failures_total",
        COUNTER,
        "Our handshake attempts with the peer whose CHALLENGE failed, by reason.",
    )
    info = Family(
        "shadowmesh_peer_info", GAUGE, "1 per peer, labelled with its name, overlay address and current path."
    )
    path_mtu = Family(
        "shadowmesh_peer_path_mtu_bytes",
        GAUGE,
        "The largest packet a frame carries on the direct path to the peer, as our probes found it "
        "(absent while not measured); labelled narrow=1 when the path drops bigger ones silently.",
    )
    for p in peers:
        pid = str(p.get("peer_id", ""))
        for fam, (_, key, _) in zip(counters, PEER_COUNTERS, strict=True):
            fam.add(p.get(key), peer=pid)
        lost.add(p.get("lost_frames"), peer=pid)
        rtt_ms = p.get("rtt_ms")
        if isinstance(rtt_ms, (int, float)):
            rtt.add(rtt_ms / 1000.0, peer=pid)
        age.add(p.get("last_handshake_s"), peer=pid)
        _by_reason(failures, p.get("handshake_failures"), peer=pid)
        if "control" in p:
            control.add(p["control"] == "up", peer=pid)
        probed = _map(p.get("path_mtu"))
        path_mtu.add(probed.get("fits"), peer=pid, narrow=str(int(probed.get("state") == "narrow")))
        info.add(
            1,
            peer=pid,
            name=str(p.get("name", "")),
            overlay_ip=str(p.get("overlay_ip", "")),
            path=str(p.get("path", "")),
        )
    return [*counters, failures, lost, rtt, age, control, path_mtu, info]


def _by_reason(fam: Family, counts: object, **fixed: str) -> Family:
    """Adds one sample per reason of a {reason: count} mapping of the document."""
    if isinstance(counts, Mapping):
        for reason, n in _map(counts).items():
            fam.add(n, **fixed, reason=str(reason))
    return fam


def _node_families(node: Doc) -> list[Family]:
    drops = Family(
        "shadowmesh_drops_total",
        COUNTER,
        "Datagrams or packets dropped by the data path, by reason (the receive order's checks, "
        "then the sending side's no_route, queue_full and too_big).",
    )
    out = [_by_reason(drops, node.get("drops"))]
    fragmented = Family(
        "shadowmesh_fragmented_packets_total",
        COUNTER,
        "Packets without DF the data path cut into IPv4 fragments for a path narrower than their frame.",
    )
    fragmented.add(node.get("fragmented"))
    out.append(fragmented)
    relay = _map(node.get("relay"))
    for key, name, text in (
        (
            "forwarded_frames",
            "shadowmesh_relay_forwarded_frames_total",
            "Frames forwarded for others (hub role).",
        ),
        (
            "forwarded_bytes",
            "shadowmesh_relay_forwarded_bytes_total",
            "Bytes forwarded for others (hub role).",
        ),
        (
            "handshakes",
            "shadowmesh_relay_handshakes_total",
            "Relayed handshake messages forwarded (hub role).",
        ),
    ):
        fam = Family(name, COUNTER, text)
        fam.add(relay.get(key))
        out.append(fam)
    refused = Family(
        "shadowmesh_relay_refused_frames_total",
        COUNTER,
        "Frames a hub did not forward, by reason (rate_limited, no_destination).",
    )
    for reason in ("rate_limited", "no_destination"):
        refused.add(relay.get(reason), reason=reason)
    out.append(refused)
    if isinstance(node.get("tun_gro"), Mapping):
        gro = _map(node.get("tun_gro"))
        for key, name, text in (
            ("writes", "shadowmesh_tun_gro_writes_total", "Merged writes to the TUN device (userspace GRO)."),
            (
                "merged_segments",
                "shadowmesh_tun_gro_merged_segments_total",
                "Segments merged into those writes.",
            ),
            ("errors", "shadowmesh_tun_gro_errors_total", "Failed merged writes."),
        ):
            fam = Family(name, COUNTER, text)
            fam.add(gro.get(key))
            out.append(fam)
    out.extend(_handshake_families(node.get("handshake")))
    uptime = Family("shadowmesh_agent_uptime_seconds", GAUGE, "Seconds since the agent started.")
    uptime.add(node.get("uptime_s"))
    info = Family(
        "shadowmesh_agent_info",
        GAUGE,
        "1, labelled with this node's peer id, name, overlay address and mode (serverless or enrolled).",
    )
    info.add(
        1,
        peer_id=str(node.get("peer_id", "")),
        name=str(node.get("name", "")),
        overlay_ip=str(node.get("overlay_ip", "")),
        mode=str(node.get("mode", "serverless")),
    )
    out += [uptime, info]
    if node.get("mode") == "enrolled":
        serial = Family("shadowmesh_netmap_serial", GAUGE, "Serial of the netmap the agent applied last.")
        serial.add(node.get("serial"))
        server = Family("shadowmesh_server_connected", GAUGE, "1 while the websocket to meshadmin is up.")
        server.add(node.get("server") == "connected")
        out += [serial, server]
    return out


def _handshake_families(hs: object) -> list[Family]:
    hs = _map(hs)
    door = _map(hs.get("door"))
    refused = Family(
        "shadowmesh_handshakes_refused_total",
        COUNTER,
        "Handshake messages refused, by where (door: the control port; link: inside a control "
        "link) and reason.",
    )
    _by_reason(refused, door.get("refused"), where="door")
    _by_reason(refused, hs.get("refused_in_links"), where="link")
    crypto = Family(
        "shadowmesh_handshake_crypto_operations_total",
        COUNTER,
        "ML-DSA-87 and ML-KEM-1024 operations of every handshake, by operation.",
    )
    if isinstance(hs.get("crypto"), Mapping):
        for op, n in _map(hs.get("crypto")).items():
            crypto.add(n, operation=str(op))
    conns = Family(
        "shadowmesh_control_connections_total", COUNTER, "Connections accepted on the control port."
    )
    conns.add(door.get("connections"))
    closed = Family(
        "shadowmesh_control_connections_closed_total",
        COUNTER,
        "Control-port connections closed before a handshake, by reason (rate_limited: its "
        "source was over its rate; displaced: pushed out of the doorway; cut: the deadline).",
    )
    for reason in ("rate_limited", "displaced", "cut"):
        closed.add(door.get(reason), reason=reason)
    answered = Family(
        "shadowmesh_handshake_challenges_total",
        COUNTER,
        "CHALLENGEs sent on the control port (HELLOs that passed every check).",
    )
    answered.add(door.get("answered"))
    waiting = Family(
        "shadowmesh_control_doorway_waiting",
        GAUGE,
        "Unauthenticated connections waiting in the control port's doorway now.",
    )
    waiting.add(door.get("waiting"))
    return [refused, crypto, conns, closed, answered, waiting]


def families(doc: Doc) -> list[Family]:
    """Every metric family of one status document (status.py `status_document`)."""
    node = _map(doc.get("node"))
    listed = doc.get("peers")
    peers = [_map(p) for p in listed if isinstance(p, Mapping)] if isinstance(listed, Iterable) else []
    return _node_families(node) + _peer_families(peers)
