"""Reading telemetry from the database: per-link samples and node presence. Never writes.

The read side of this app for its two readers, the telemetry API (api.py) and the dashboard
(meshadmin/dashboard/queries.py, which shapes what it gets here for its pages). This module
knows the telemetry models and their queries; what it returns is plain data: `LinkFigures`
(one reporter's figures for one link, with datetimes, not text), `NodePresence`, `DhtFigures`
(a node's DHT as it last reported it), sample rows for charts, byte totals. A sample's rates and
loss come from nodeagent.protocol.counters.rates, the one place they are derived.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from meshadmin.mesh.models import Node
from nodeagent.protocol.counters import TRAFFIC, Rates, dht_from_dict, rates
from nodeagent.protocol.strict import Malformed

from .models import Presence, Resolution, Sample

__all__ = [
    "CURRENT_WINDOW",
    "OFFLINE",
    "DhtFigures",
    "LinkFigures",
    "NodePresence",
    "PathChange",
    "current_links",
    "denied_frames",
    "figures",
    "link_samples",
    "link_series",
    "node_dht",
    "path_changes",
    "path_changes_in",
    "presence",
    "received_bytes",
]

CURRENT_WINDOW = timedelta(seconds=10)  # a link's figures are "current" for a few report intervals


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """What one node (`reporter`) saw on its link to `peer` during the sample ending at `at`."""

    reporter: str  # peer id of the node that reported
    at: datetime
    peer: str  # peer id of the other end
    path: str  # "direct" or "relay:<peer id>"
    rtt_ms: float | None
    last_handshake_s: float | None
    rates: Rates  # tx/rx bytes and frames per second, loss_pct (counters.rates)


def figures(sample: Sample, reporter: str) -> LinkFigures:
    return LinkFigures(reporter=reporter, at=sample.ts, peer=sample.peer_id, path=sample.path,
                       rtt_ms=sample.rtt_ms, last_handshake_s=sample.last_handshake_s,
                       rates=rates(sample, sample.interval_s))


def current_links(network_id: int, now: datetime | None = None) -> list[LinkFigures]:
    """The newest raw sample of every (reporter, peer) link of the network seen in CURRENT_WINDOW."""
    now = now or timezone.now()
    rows = (Sample.objects.filter(network_id=network_id, resolution=Resolution.RAW,
                                  ts__gte=now - CURRENT_WINDOW)
            .select_related("node").order_by("node_id", "peer_id", "-ts"))
    out, seen = [], set()
    for s in rows:
        key = (s.node_id, s.peer_id)
        if key in seen:
            continue
        seen.add(key)
        out.append(figures(s, s.node.peer_id))
    return out


def link_series(node: Node, peer_id: str, window: timedelta,
                now: datetime | None = None) -> tuple[str, list[LinkFigures]]:
    """("raw" or "1m", points of one link, oldest first): raw samples for windows up to 1 h,
    minute rows beyond."""
    now = now or timezone.now()
    resolution = Resolution.RAW if window <= timedelta(hours=1) else Resolution.MINUTE
    rows = Sample.objects.filter(node_id=node.pk, peer_id=peer_id, resolution=resolution,
                                 ts__gte=now - window).order_by("ts")
    return ("raw" if resolution == Resolution.RAW else "1m"), [figures(s, node.peer_id) for s in rows]


def link_samples(node: Node, since: datetime, until: datetime) -> list[Sample]:
    """The node's raw samples of every link in [since, until], oldest first (for its charts)."""
    return list(
        Sample.objects.filter(node=node, resolution=Resolution.RAW, ts__gte=since, ts__lte=until)
        .order_by("ts")
        .only("peer_id", "ts", "interval_s", "rtt_ms", *TRAFFIC)
    )


def received_bytes(network_id: int, since: datetime, until: datetime) -> int:
    """Bytes received over all links of the network in [since, until] (each byte counted once:
    by the node that received it)."""
    total = (Sample.objects.filter(network_id=network_id, resolution=Resolution.RAW, ts__gte=since,
                                   ts__lte=until)
             .aggregate(rx=Sum("rx_bytes"))["rx"])
    return int(total or 0)


def denied_frames(network_id: int, since: datetime, until: datetime,
                  node_pk: int | None = None) -> dict[int, dict[str, int]]:
    """Frames each node's access policy refused in [since, until] (one node's only with `node_pk`),
    by the peer they came from: node pk -> {peer id: frames}; only links with refusals. One query."""
    samples = Sample.objects.filter(network_id=network_id, resolution=Resolution.RAW, ts__gte=since,
                                    ts__lte=until)
    if node_pk is not None:
        samples = samples.filter(node_id=node_pk)
    rows = (samples
            .values("node_id", "peer_id").annotate(n=Sum("denied_frames")).filter(n__gt=0)
            .values_list("node_id", "peer_id", "n"))
    out: dict[int, dict[str, int]] = {}
    for node_id, peer_id, n in rows:
        out.setdefault(node_id, {})[peer_id] = int(n)
    return out


@dataclass(frozen=True, slots=True)
class NodePresence:
    online: bool = False  # the agent's websocket is open
    last_seen: datetime | None = None  # last activity on that websocket


OFFLINE = NodePresence()


@dataclass(frozen=True, slots=True)
class DhtFigures:
    """A node's DHT as its last report said (docs/dht.md); `published_s`: seconds since it last
    published its record, now (the report's age added), None if it had not."""

    contacts: int
    records: int
    published_s: float | None
    lookups: int
    failures: int
    reported_at: datetime


def node_dht(node_pk: int, now: datetime | None = None) -> DhtFigures | None:
    """None when the node never reported a DHT (it runs none, or an older agent)."""
    now = now or timezone.now()
    row = Presence.objects.filter(node_id=node_pk).values("dht", "dht_at").first()
    if row is None or row["dht"] is None or row["dht_at"] is None:
        return None
    try:
        d = dht_from_dict(row["dht"])
    except Malformed:
        return None
    age = max(0.0, (now - row["dht_at"]).total_seconds())
    return DhtFigures(d.contacts, d.records, None if d.last_publish_s is None else d.last_publish_s + age,
                      d.lookups, d.failures, row["dht_at"])


def presence(peer_ids: list[str]) -> dict[str, NodePresence]:
    """peer id -> NodePresence; nodes that never connected are absent (use OFFLINE)."""
    rows = Presence.objects.filter(node__peer_id__in=peer_ids).values_list("node__peer_id", "online",
                                                                          "last_seen")
    return {pid: NodePresence(bool(online), last_seen) for pid, online, last_seen in rows}


@dataclass(frozen=True, slots=True)
class PathChange:
    at: datetime
    peer_id: str
    before: str  # "direct" or "relay:<peer id>"
    after: str


def path_changes_in(rows: Iterable[tuple[str, datetime, str]]) -> list[PathChange]:
    """The path changes in a node's samples: `rows` are (peer id, ts, path) ordered by peer id, then
    ts; a change is two consecutive samples of one peer with different paths. Newest first. Pure."""
    out = []
    last: tuple[str, str] | None = None  # (peer id, path) of the previous row
    for peer_id, ts, path in rows:
        if last is not None and peer_id == last[0] and path != last[1]:
            out.append(PathChange(ts, peer_id, last[1], path))
        last = (peer_id, path)
    return sorted(out, key=lambda c: (c.at, c.peer_id), reverse=True)


def path_changes(node_pk: int, now: datetime, window: timedelta = timedelta(hours=1)) -> list[PathChange]:
    """The path changes a node reported on its links within `window` (raw samples: every report,
    ~2 s apart), newest first. One query."""
    rows = (Sample.objects.filter(node_id=node_pk, resolution=Resolution.RAW, ts__gte=now - window)
            .order_by("peer_id", "ts").values_list("peer_id", "ts", "path"))
    return path_changes_in(rows)
