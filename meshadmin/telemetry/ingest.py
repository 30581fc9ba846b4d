"""Check an agent's counter report, store per-link samples, and build the dashboard update.

The agent sends totals since it started (status --json fields). The consumer keeps the previous
report of its socket and passes it in; a link's sample is the difference over the interval. The
first report of a socket, a new peer and a restarted agent (smaller uptime or totals) only set
the baseline. Peers that are not nodes of the reporter's network are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from meshadmin.mesh.models import Node
from nodeagent.protocol import netmap as nm

from . import presence
from .models import Resolution, Sample

__all__ = ["MAX_PEERS_PER_REPORT", "Reporter", "ingest", "link_figures"]

MAX_PEERS_PER_REPORT = 1024


@dataclass(frozen=True, slots=True)
class Reporter:
    pk: int
    peer_id: str
    network_id: int


def _delta(cur: int, prev: int) -> int:
    return cur - prev if cur >= prev else cur  # smaller total: the agent restarted its counters


def link_figures(sample: Sample) -> dict:
    """Rates of one sample, as the dashboard and the API show them."""
    interval = sample.interval_s or 1.0
    expected = sample.rx_frames + sample.lost_frames
    return {
        "peer": sample.peer_id,
        "path": sample.path,
        "rtt_ms": sample.rtt_ms,
        "tx_bytes_per_s": round(sample.tx_bytes / interval, 1),
        "rx_bytes_per_s": round(sample.rx_bytes / interval, 1),
        "tx_frames_per_s": round(sample.tx_frames / interval, 2),
        "rx_frames_per_s": round(sample.rx_frames / interval, 2),
        "loss_pct": round(100.0 * sample.lost_frames / expected, 3) if expected else 0.0,
        "last_handshake_s": sample.last_handshake_s,
    }


def ingest(reporter: Reporter, stats: nm.Stats, previous: nm.Stats | None, interval_s: float,
           now: datetime | None = None) -> dict | None:
    """Store one sample per link; returns the compact update for the dashboard group (or None)."""
    now = now or timezone.now()
    presence.seen(reporter.pk, now)
    if previous is None or stats.uptime_s < previous.uptime_s or interval_s <= 0:
        return None
    peers = stats.peers[:MAX_PEERS_PER_REPORT]
    known = set(Node.objects.filter(network_id=reporter.network_id, peer_id__in=[p.peer_id for p in peers])
                .exclude(pk=reporter.pk).values_list("peer_id", flat=True))
    before = {p.peer_id: p for p in previous.peers}
    rows = []
    for p in peers:
        old = before.get(p.peer_id)
        if p.peer_id not in known or old is None:
            continue
        rows.append(Sample(
            network_id=reporter.network_id, node_id=reporter.pk, peer_id=p.peer_id,
            resolution=Resolution.RAW, ts=now, interval_s=interval_s, path=p.path, rtt_ms=p.rtt_ms,
            last_handshake_s=p.last_handshake_s,
            tx_bytes=_delta(p.tx_bytes, old.tx_bytes), rx_bytes=_delta(p.rx_bytes, old.rx_bytes),
            tx_frames=_delta(p.tx_frames, old.tx_frames), rx_frames=_delta(p.rx_frames, old.rx_frames),
            lost_frames=_delta(p.lost_frames, old.lost_frames)))
    if not rows:
        return None
    Sample.objects.bulk_create(rows)
    return {"network": reporter.network_id, "peer_id": reporter.peer_id, "ts": now.isoformat(),
            "links": [link_figures(s) for s in rows]}
