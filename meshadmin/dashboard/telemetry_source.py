"""Where the dashboard reads live data: node presence and per-link samples (meshadmin.telemetry).

The only module of the dashboard that knows the telemetry storage. Everything it returns is
plain data (dicts, tuples, topology.LinkReport), so views, templates and the map never depend on
the telemetry models. Read-only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Sum

from meshadmin.mesh.models import Network, Node
from meshadmin.telemetry.models import Presence, Resolution, Sample
from meshadmin.telemetry.queries import current_links

from .topology import LinkReport

__all__ = [
    "OFFLINE",
    "SERIES_POINTS",
    "NodePresence",
    "latest_reports",
    "presence",
    "series",
    "traffic_totals",
]

SERIES_POINTS = 120  # at most this many points per chart (30 s buckets for a full hour)


@dataclass(frozen=True, slots=True)
class NodePresence:
    online: bool = False  # the agent's websocket is open
    last_seen: datetime | None = None  # last activity on that websocket


OFFLINE = NodePresence()


def presence(peer_ids: list[str], now: datetime) -> dict[str, NodePresence]:
    """peer id -> NodePresence; nodes that never connected are absent (use OFFLINE)."""
    rows = Presence.objects.filter(node__peer_id__in=peer_ids).values_list(
        "node__peer_id", "online", "last_seen"
    )
    return {pid: NodePresence(bool(online), last_seen) for pid, online, last_seen in rows}


def latest_reports(network: Network, now: datetime) -> list[LinkReport]:
    """The newest report of every (reporter, peer) link of the network (telemetry's current window)."""
    reports = []
    for link in current_links(network.pk, now):
        reports.append(
            LinkReport(
                reporter=link["reporter"],
                peer=link["peer"],
                path=link["path"],
                rtt_ms=link["rtt_ms"],
                loss_pct=link["loss_pct"],
                rx_bps=link["rx_bytes_per_s"],
                tx_bps=link["tx_bytes_per_s"],
                last_handshake_s=link["last_handshake_s"],
                at=datetime.fromisoformat(link["at"]),
            )
        )
    return reports


def _bucket_seconds(span_s: float) -> float:
    """A round bucket size giving at most SERIES_POINTS points over the span (2 s .. 60 s)."""
    for size in (2, 5, 10, 15, 30, 60):
        if span_s / size <= SERIES_POINTS:
            return float(size)
    return 60.0


def series(node: Node, now: datetime, window: timedelta = timedelta(hours=1)) -> dict:
    """The node's links over the window as aligned arrays for uPlot.

    `{"t": [unix s], "rx": [B/s], "tx": [B/s], "peers": [{peer_id, name, rtt: [ms], loss: [%]}]}`:
    rx/tx are the node's total over all links; null = no sample in that bucket. The series starts
    at the first sample in the window (so a young link gets fine points) and has at most
    SERIES_POINTS buckets.
    """
    rows = list(
        Sample.objects.filter(node=node, resolution=Resolution.RAW, ts__gte=now - window, ts__lte=now)
        .order_by("ts")
        .only("peer_id", "ts", "interval_s", "rtt_ms", "tx_bytes", "rx_bytes", "rx_frames", "lost_frames")
    )
    if not rows:
        return {"t": [], "rx": [], "tx": [], "peers": []}
    step = _bucket_seconds((now - rows[0].ts).total_seconds())
    first = math.floor(rows[0].ts.timestamp() / step) * step
    count = max(1, math.ceil((now.timestamp() - first) / step))
    t = [first + (i + 1) * step for i in range(count)]

    # Per bucket: the bytes and seconds each link covered, then rate = bytes / seconds.
    link_bytes = defaultdict(lambda: [[0.0, 0.0, 0.0] for _ in range(count)])  # peer -> [rx, tx, secs]
    rtt_sum = defaultdict(lambda: [[0.0, 0] for _ in range(count)])
    frames = defaultdict(lambda: [[0, 0] for _ in range(count)])  # peer -> [received, lost]
    for s in rows:
        i = min(count - 1, max(0, int((s.ts.timestamp() - first) // step)))
        acc = link_bytes[s.peer_id][i]
        acc[0] += s.rx_bytes
        acc[1] += s.tx_bytes
        acc[2] += s.interval_s
        if s.rtt_ms is not None:
            rtt_sum[s.peer_id][i][0] += s.rtt_ms
            rtt_sum[s.peer_id][i][1] += 1
        frames[s.peer_id][i][0] += s.rx_frames
        frames[s.peer_id][i][1] += s.lost_frames

    rx: list[float | None] = [None] * count
    tx: list[float | None] = [None] * count
    for buckets in link_bytes.values():
        for i, (rxb, txb, secs) in enumerate(buckets):
            if secs > 0:
                rx[i] = (rx[i] or 0.0) + rxb / secs
                tx[i] = (tx[i] or 0.0) + txb / secs

    names = dict(Node.objects.filter(peer_id__in=list(link_bytes)).values_list("peer_id", "name"))
    peers = []
    for peer_id in sorted(link_bytes, key=lambda p: (names.get(p, p).lower(), p)):
        rtt = [round(total / n, 2) if n else None for total, n in rtt_sum[peer_id]]
        loss = [
            round(100.0 * lost / (got + lost), 3) if (got + lost) else None for got, lost in frames[peer_id]
        ]
        peers.append({"peer_id": peer_id, "name": names.get(peer_id, peer_id[:12]), "rtt": rtt, "loss": loss})
    return {
        "t": t,
        "rx": [None if v is None else round(v, 1) for v in rx],
        "tx": [None if v is None else round(v, 1) for v in tx],
        "peers": peers,
    }


def traffic_totals(network: Network, now: datetime, window: timedelta = timedelta(hours=1)) -> dict | None:
    """Bytes received over all links of the network in the window (each byte counted once)."""
    total = (
        Sample.objects.filter(network=network, resolution=Resolution.RAW, ts__gte=now - window, ts__lte=now)
        .aggregate(rx=Sum("rx_bytes"))["rx"]
    )
    return {"bytes": int(total or 0), "window": window}

