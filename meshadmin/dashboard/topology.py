"""The topology map's graph, as plain JSON for cytoscape. Pure: no database, no clock.

Input is what the view gathered (nodes, and the latest figures of each link from each agent:
meshadmin.telemetry.queries.LinkFigures); the output is `{"nodes": [...], "edges": [...],
"summary": {...}}` in cytoscape's element shape (`{"data": {...}}`), which static/js/topology.js
adds, updates or removes by id.

Both ends of a link report it (A says "B: rtt 12 ms", B says "A: rtt 13 ms"), so the two reports
are merged into one undirected edge whose id does not depend on who reported: the pair of peer
ids in sorted order. The edge shows the worse of the two views (higher loss, higher RTT) and
the traffic each way as its `source` node sees it: `tx_bytes_per_s` source -> target,
`rx_bytes_per_s` target -> source, `bytes_per_s` both (the edge's width).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshadmin.telemetry.queries import LinkFigures

__all__ = [
    "LINK_MAX_AGE",
    "NodeInfo",
    "build_graph",
    "link_quality",
]

# A report older than this no longer draws an edge (agents report every few seconds).
LINK_MAX_AGE = timedelta(seconds=60)

# Thresholds for colouring an edge: (loss %, RTT ms) at or above which a link is warn / bad.
WARN_LOSS_PCT, BAD_LOSS_PCT = 1.0, 5.0
WARN_RTT_MS, BAD_RTT_MS = 100.0, 250.0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    peer_id: str
    name: str
    overlay_ip: str | None
    is_public: bool
    is_relay: bool
    online: bool
    revoked: bool = False


def link_quality(loss_pct: float | None, rtt_ms: float | None) -> str:
    """'good', 'warn', 'bad', or 'unknown' when neither figure has been measured yet."""
    if loss_pct is None and rtt_ms is None:
        return "unknown"
    loss = loss_pct or 0.0
    rtt = rtt_ms or 0.0
    if loss >= BAD_LOSS_PCT or rtt >= BAD_RTT_MS:
        return "bad"
    if loss >= WARN_LOSS_PCT or rtt >= WARN_RTT_MS:
        return "warn"
    return "good"


def _worst(*candidates: float | None) -> float | None:
    values = [v for v in candidates if v is not None]
    return max(values) if values else None


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _node_element(node: NodeInfo) -> dict[str, object]:
    return {
        "data": {
            "id": node.peer_id,
            "label": node.name,
            "overlay_ip": node.overlay_ip or "",
            "hub": node.is_public or node.is_relay,
            "online": node.online and not node.revoked,
            "state": "revoked" if node.revoked else ("online" if node.online else "offline"),
        }
    }


def build_graph(
    nodes: list[NodeInfo],
    reports: list[LinkFigures],
    now: datetime,
    max_age: timedelta = LINK_MAX_AGE,
) -> dict[str, object]:
    """Graph JSON for the map. Revoked nodes are left out; stale or dangling reports draw nothing."""
    shown = {n.peer_id: n for n in nodes if not n.revoked}
    # Latest fresh report per (reporter, peer); a report about an unknown node is ignored.
    latest: dict[tuple[str, str], LinkFigures] = {}
    for report in reports:
        if report.reporter == report.peer:
            continue
        if report.reporter not in shown or report.peer not in shown:
            continue
        if now - report.at > max_age:
            continue
        key = (report.reporter, report.peer)
        if key not in latest or latest[key].at < report.at:
            latest[key] = report

    edges = {}
    for reporter, peer in sorted(latest):
        source, target = sorted((reporter, peer))
        edge_id = f"{source}~{target}"
        if edge_id in edges:
            continue
        forward = latest.get((source, target))  # the source's own view
        backward = latest.get((target, source))  # the target's view
        views = [r for r in (forward, backward) if r is not None]
        if not (shown[source].online and shown[target].online):
            continue
        relayed = [r.path for r in views if r.path.startswith("relay:")]
        via = relayed[0].split(":", 1)[1] if relayed else ""
        loss = _worst(*(r.rates.loss_pct for r in views))
        rtt = _worst(*(r.rtt_ms for r in views))
        # Traffic source -> target: what the source sent, else what the target received.
        tx = _first(forward.rates.tx_bytes_per_s if forward else None,
                    backward.rates.rx_bytes_per_s if backward else None)
        rx = _first(forward.rates.rx_bytes_per_s if forward else None,
                    backward.rates.tx_bytes_per_s if backward else None)
        handshake = [r.last_handshake_s for r in views if r.last_handshake_s is not None]
        edges[edge_id] = {
            "data": {
                "id": edge_id,
                "source": source,
                "target": target,
                "path": "relay" if via else "direct",
                "via": via,
                "via_name": shown[via].name if via in shown else "",
                "rtt_ms": rtt,
                "loss_pct": loss,
                "tx_bytes_per_s": tx,
                "rx_bytes_per_s": rx,
                "bytes_per_s": (tx or 0.0) + (rx or 0.0),
                "last_handshake_s": min(handshake) if handshake else None,
                "quality": link_quality(loss, rtt),
            }
        }

    node_elements = [_node_element(n) for n in sorted(shown.values(), key=lambda n: (n.name, n.peer_id))]
    edge_list = [edges[k] for k in sorted(edges)]
    online = sum(1 for n in shown.values() if n.online)
    return {
        "nodes": node_elements,
        "edges": edge_list,
        "summary": {
            "nodes": len(shown),
            "online": online,
            "offline": len(shown) - online,
            "links": len(edge_list),
            "relayed": sum(1 for e in edge_list if e["data"]["path"] == "relay"),
        },
    }
