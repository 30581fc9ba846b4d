"""Shaping for the dashboard's pages: mesh rows and telemetry as the views and templates want them.

Never writes (services do that) and never queries the telemetry models itself: presence and
link figures come from meshadmin/telemetry/queries.py (the database side), and this module
turns them, with the mesh rows, into what a page shows: the node table, the map's graph
(topology.py builds it), a node's links, the overview, the hour charts, the audit log.
"""

from __future__ import annotations

import ipaddress
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from meshadmin.mesh.choices import NodeStatus
from meshadmin.mesh.models import AuditEvent, Network, Node
from meshadmin.telemetry import queries as telemetry
from nodeagent.protocol.counters import Traffic, rates

from .topology import NodeInfo, build_graph

__all__ = [
    "SERIES_POINTS",
    "NodeRow",
    "audit_events",
    "graph_for",
    "node_denied",
    "node_dht",
    "node_links",
    "node_path_changes",
    "node_rows",
    "overview",
    "pick_network",
    "series",
    "with_labels",
]

SERIES_POINTS = 120  # at most this many points per chart (30 s buckets for a full hour)


def pick_network(name: str | None) -> Network | None:
    """The network named in the query string, else the first one (None when there is none)."""
    networks = Network.objects.all()
    if name:
        found = networks.filter(name=name).first()
        if found is not None:
            return found
    return networks.first()


@dataclass(frozen=True)
class NodeRow:
    node: Node
    online: bool
    state: str  # online / offline / revoked
    version: str
    last_seen: datetime | None  # the later of the agent link's activity and the peer record

    @property
    def endpoint(self) -> str:
        n = self.node
        if n.endpoint_ip and n.udp_port:
            host = f"[{n.endpoint_ip}]" if ":" in n.endpoint_ip else n.endpoint_ip
            return f"{host}:{n.udp_port}"
        return ""


def _ip_key(value: str | None):
    try:
        return (0, ipaddress.ip_address(value)) if value else (1, None)
    except ValueError:
        return (1, None)


def node_rows(
    network: Network | None,
    *,
    q: str = "",
    status: str = "",
    sort: str = "name",
    descending: bool = False,
    now: datetime | None = None,
) -> list[NodeRow]:
    now = now or timezone.now()
    nodes = Node.objects.select_related("network").order_by("name", "peer_id")
    if network is not None:
        nodes = nodes.filter(network=network)
    if q:
        nodes = nodes.filter(
            Q(name__icontains=q) | Q(peer_id__startswith=q.lower()) | Q(overlay_ip__startswith=q)
            | Q(endpoint_ip__startswith=q)
        )
    node_list = list(nodes)
    presence = telemetry.presence([n.peer_id for n in node_list])
    rows = []
    for n in node_list:
        seen = presence.get(n.peer_id, telemetry.OFFLINE)
        online = n.status == NodeStatus.ACTIVE and seen.online
        state = "revoked" if n.status == NodeStatus.REVOKED else ("online" if online else "offline")
        last_seen = max((t for t in (seen.last_seen, n.last_seen) if t is not None), default=None)
        rows.append(NodeRow(n, online, state, n.agent_version, last_seen))
    if status:
        rows = [r for r in rows if r.state == status]
    keys = {
        "name": lambda r: (r.node.name.lower(), r.node.peer_id),
        "overlay_ip": lambda r: _ip_key(r.node.overlay_ip),
        "online": lambda r: ({"online": 0, "offline": 1, "revoked": 2}[r.state], r.node.name.lower()),
        "last_seen": lambda r: (r.last_seen is None, r.last_seen or now),
        "endpoint": lambda r: (not r.endpoint, r.endpoint),
    }
    rows.sort(key=keys.get(sort, keys["name"]), reverse=descending)
    return rows


def _node_infos(network: Network, now: datetime) -> list[NodeInfo]:
    nodes = list(Node.objects.filter(network=network).order_by("name"))
    presence = telemetry.presence([n.peer_id for n in nodes])
    return [
        NodeInfo(
            peer_id=n.peer_id,
            name=n.name,
            overlay_ip=n.overlay_ip,
            is_public=n.is_public,
            is_relay=n.is_relay,
            online=n.status == NodeStatus.ACTIVE and presence.get(n.peer_id, telemetry.OFFLINE).online,
            revoked=n.status == NodeStatus.REVOKED,
        )
        for n in nodes
    ]


def graph_for(network: Network | None, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    if network is None:
        return build_graph([], [], now)
    return build_graph(_node_infos(network, now), telemetry.current_links(network.pk, now), now)


def node_dht(node: Node, now: datetime | None = None) -> telemetry.DhtFigures | None:
    """The node's DHT as it last reported it (the node page's "DHT" line); None: it reports none."""
    return telemetry.node_dht(node.pk, now or timezone.now())


def node_links(node: Node, now: datetime | None = None) -> list[dict]:
    """The node's links as rows for its page: both ends' views merged (from the map graph), the
    traffic as the node sees it (tx: what it sent)."""
    now = now or timezone.now()
    graph = graph_for(node.network, now)
    names = {n["data"]["id"]: n["data"]["label"] for n in graph["nodes"]}
    rows = []
    for edge in graph["edges"]:
        d = edge["data"]
        if node.peer_id not in (d["source"], d["target"]):
            continue
        outgoing = d["source"] == node.peer_id
        other = d["target"] if outgoing else d["source"]
        rows.append(
            {
                "peer_id": other,
                "name": names.get(other, other[:12]),
                "path": d["path"],
                "via": d["via"],
                "via_name": d["via_name"],
                "rtt_ms": d["rtt_ms"],
                "loss_pct": d["loss_pct"],
                "tx_bytes_per_s": d["tx_bytes_per_s"] if outgoing else d["rx_bytes_per_s"],
                "rx_bytes_per_s": d["rx_bytes_per_s"] if outgoing else d["tx_bytes_per_s"],
                "last_handshake_s": d["last_handshake_s"],
                "quality": d["quality"],
            }
        )
    return sorted(rows, key=lambda r: r["name"].lower())


def node_denied(node: Node, now: datetime | None = None, window: timedelta = timedelta(hours=1)) -> dict:
    """What the node's access policy refused within `window`: {"total": frames, "from": [(name,
    peer id, frames)], most first}. Two queries at most."""
    now = now or timezone.now()
    by_peer = telemetry.denied_frames(node.network_id, now - window, now, node_pk=node.pk).get(node.pk, {})
    if not by_peer:
        return {"total": 0, "from": []}
    names = dict(Node.objects.filter(network_id=node.network_id, peer_id__in=list(by_peer))
                 .values_list("peer_id", "name"))
    rows = sorted(((names.get(p, p[:12]), p, n) for p, n in by_peer.items()), key=lambda r: (-r[2], r[0]))
    return {"total": sum(by_peer.values()), "from": rows}


PATH_CHANGES_SHOWN = 20


def _path_label(path: str, names: dict[str, str]) -> str:
    if path.startswith("relay:"):
        hub = path.split(":", 1)[1]
        return f"relay via {names.get(hub, hub[:12])}"
    return path


def node_path_changes(node: Node, now: datetime | None = None) -> list[dict]:
    """The node's path changes of the last hour, newest first (at most PATH_CHANGES_SHOWN): when a
    peer's traffic moved between direct and a relay, or between relays, as its reports show.
    Two queries whatever the mesh size."""
    now = now or timezone.now()
    changes = telemetry.path_changes(node.pk, now)[:PATH_CHANGES_SHOWN]
    if not changes:
        return []
    names = dict(Node.objects.filter(network_id=node.network_id).values_list("peer_id", "name"))
    return [{"at": c.at, "peer_id": c.peer_id, "name": names.get(c.peer_id, c.peer_id[:12]),
             "before": _path_label(c.before, names), "after": _path_label(c.after, names),
             "direct": c.after == "direct"} for c in changes]


def overview(network: Network | None, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    graph = graph_for(network, now)
    edges = [e["data"] for e in graph["edges"]]
    names = {n["data"]["id"]: n["data"]["label"] for n in graph["nodes"]}
    order = {"bad": 0, "warn": 1, "unknown": 2, "good": 3}
    worst = sorted(edges, key=lambda d: (order[d["quality"]], -(d["loss_pct"] or 0), -(d["rtt_ms"] or 0)))
    worst_links = [
        {**d, "source_name": names.get(d["source"], ""), "target_name": names.get(d["target"], "")}
        for d in worst[:5]
    ]
    networks = list(Network.objects.all())
    latest = AuditEvent.objects.select_related("network").order_by("-created_at", "-id")[:8]
    recent = with_labels(latest)
    return {
        "graph": graph,
        "summary": graph["summary"],
        "networks": networks,
        "bytes_per_s": sum(d["bytes_per_s"] for d in edges),
        "traffic_totals": traffic_totals(network, now) if network else None,
        "worst_links": worst_links,
        "recent_audit": recent,
    }


def traffic_totals(network: Network, now: datetime, window: timedelta = timedelta(hours=1)) -> dict:
    """Bytes received over all links of the network in the window (each byte counted once)."""
    return {"bytes": telemetry.received_bytes(network.pk, now - window, now), "window": window}


def _bucket_seconds(span_s: float) -> float:
    """A round bucket size giving at most SERIES_POINTS points over the span (2 s .. 60 s)."""
    for size in (2, 5, 10, 15, 30, 60):
        if span_s / size <= SERIES_POINTS:
            return float(size)
    return 60.0


def series(node: Node, now: datetime, window: timedelta = timedelta(hours=1)) -> dict:
    """The node's links over the window as aligned arrays for uPlot (static/js/node.js).

    `{"t": [unix s], "rx_bytes_per_s": [...], "tx_bytes_per_s": [...],
      "peers": [{peer_id, name, rtt_ms: [...], loss_pct: [...]}]}`: the rates are the node's total
    over all links; null = no sample in that bucket. The series starts at the first sample in the
    window (so a young link gets fine points) and has at most SERIES_POINTS buckets. Each link's
    figures in a bucket are the rates of what it carried in the bucket's samples
    (nodeagent.protocol.counters.rates, as for a single sample).
    """
    rows = telemetry.link_samples(node, now - window, now)
    if not rows:
        return {"t": [], "rx_bytes_per_s": [], "tx_bytes_per_s": [], "peers": []}
    step = _bucket_seconds((now - rows[0].ts).total_seconds())
    first = math.floor(rows[0].ts.timestamp() / step) * step
    count = max(1, math.ceil((now.timestamp() - first) / step))
    t = [first + (i + 1) * step for i in range(count)]

    # per link and bucket: the traffic of its samples, the seconds they cover, their RTTs
    carried: dict[str, list[Traffic | None]] = defaultdict(lambda: [None] * count)
    seconds: dict[str, list[float]] = defaultdict(lambda: [0.0] * count)
    rtts: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(count)])
    for s in rows:
        i = min(count - 1, max(0, int((s.ts.timestamp() - first) // step)))
        carried[s.peer_id][i] = (carried[s.peer_id][i] or Traffic()) + s
        seconds[s.peer_id][i] += s.interval_s
        if s.rtt_ms is not None:
            rtts[s.peer_id][i].append(s.rtt_ms)

    rx: list[float | None] = [None] * count
    tx: list[float | None] = [None] * count
    loss: dict[str, list[float | None]] = {}
    for peer_id, buckets in carried.items():
        loss[peer_id] = [None] * count
        for i, traffic in enumerate(buckets):
            if traffic is None:
                continue
            r = rates(traffic, seconds[peer_id][i])
            rx[i] = (rx[i] or 0.0) + r.rx_bytes_per_s
            tx[i] = (tx[i] or 0.0) + r.tx_bytes_per_s
            loss[peer_id][i] = r.loss_pct

    names = dict(Node.objects.filter(peer_id__in=list(carried)).values_list("peer_id", "name"))
    peers = []
    for peer_id in sorted(carried, key=lambda p: ((names.get(p) or p).lower(), p)):
        rtt = [round(sum(ms) / len(ms), 2) if ms else None for ms in rtts[peer_id]]
        peers.append({"peer_id": peer_id, "name": names.get(peer_id, peer_id[:12]), "rtt_ms": rtt,
                      "loss_pct": loss[peer_id]})
    return {
        "t": t,
        "rx_bytes_per_s": [None if v is None else round(v, 1) for v in rx],
        "tx_bytes_per_s": [None if v is None else round(v, 1) for v in tx],
        "peers": peers,
    }


def with_labels(events) -> list:
    """Label each event for people: `actor_label` (a node's current name instead of its peer id, a
    user's name) and `object_label` / `object_peer_id` (the node, token or route it is about)."""
    events = list(events)
    peer_ids = {e.actor.split(":", 1)[1] for e in events if e.actor.startswith("node:")}
    names = dict(Node.objects.filter(peer_id__in=peer_ids).values_list("peer_id", "name"))
    node_pks = {int(e.object_id) for e in events if e.object_type == "node" and e.object_id.isdigit()}
    nodes = {pk: (name, pid) for pk, name, pid in
             Node.objects.filter(pk__in=node_pks).values_list("pk", "name", "peer_id")}
    for e in events:
        e.object_peer_id = ""
        details = e.details if isinstance(e.details, dict) else {}
        if e.object_type == "node" and e.object_id.isdigit() and int(e.object_id) in nodes:
            e.object_label, e.object_peer_id = nodes[int(e.object_id)]
            e.object_label = f"node {e.object_label}"
        elif e.object_type == "node":
            e.object_label = f"node {details.get('name') or e.object_id[:12]}"
        elif e.object_type == "enrollmenttoken":
            e.object_label = f"token {details.get('prefix', e.object_id)}…"
        elif e.object_type == "route":
            e.object_label = f"route {details.get('prefix', e.object_id)}"
        else:
            e.object_label = f"{e.object_type} {e.object_id}".strip()
        kind, _, who = e.actor.partition(":")
        if kind == "node":
            e.actor_label = f"node {names.get(who, who[:12])}"
        elif kind == "user":
            e.actor_label = who
        else:
            e.actor_label = e.actor
    return events


def audit_events(
    *,
    node: str = "",
    actor: str = "",
    action: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 200,
):
    events = AuditEvent.objects.select_related("network").order_by("-created_at", "-id")
    if node:
        matches = Node.objects.filter(Q(name__iexact=node) | Q(peer_id__startswith=node.lower()))
        peer_ids = list(matches.values_list("peer_id", flat=True)[:50])
        pks = [str(pk) for pk in matches.values_list("pk", flat=True)[:50]]
        cond = Q(object_type="node", object_id__in=pks)
        for pid in peer_ids:
            cond |= Q(actor=f"node:{pid}") | Q(details__peer_id=pid) | Q(details__via=pid)
        if node.lower() and len(node) >= 4:
            cond |= Q(actor__startswith=f"node:{node.lower()}")
        events = events.filter(cond)
    if actor:
        # "alice" finds user:alice; a node's name finds node:<its peer id>
        named = Node.objects.filter(name__icontains=actor).values_list("peer_id", flat=True)[:50]
        events = events.filter(Q(actor__icontains=actor) | Q(actor__in=[f"node:{pid}" for pid in named]))
    if action:
        events = events.filter(action=action)
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lte=until)
    return with_labels(events[:limit])
