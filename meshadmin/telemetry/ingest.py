"""Store an agent's counter reports as per-link samples.

The agent sends totals since it started (nodeagent.protocol.counters.PeerCounters, the counters
of its status --json). The consumer keeps the previous report of its socket and passes it in; a
link's sample is the difference over the interval (counters.difference). The first report of a
socket, a new peer and a restarted agent (smaller uptime) only set the baseline. Peers that are
not nodes of the reporter's network are dropped; the consumer has already refused reports that
list more peers than the network has (realtime/consumers.py). The consumer buffers reports and
stores them with ingest_batch about once a second, so a thousand agents reporting every 2 s cost
one transaction per second, not five hundred.

Nothing here computes rates: readers derive them from the stored samples (queries.py).

A report that carries the node's DHT figures (`Stats.dht`) updates its Presence row (`dht`, with
the time of the report in `dht_at`), only when they changed beyond the age of the last publish:
that one grows every report, and the page adds the time since `dht_at` to it.

After a batch, the process deletes ephemeral nodes that went silent, at most once a minute
(mesh/services/ephemeral.py `reap_if_due`: without Celery beat nothing else would).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from meshadmin.mesh.models import Node
from meshadmin.mesh.services import ephemeral
from meshadmin.metrics import events
from nodeagent.protocol import messages
from nodeagent.protocol.counters import DhtCounters, dht_to_dict, difference

from .models import Presence, Resolution, Sample

__all__ = ["Report", "Reporter", "ingest", "ingest_batch"]


@dataclass(frozen=True, slots=True)
class Reporter:
    pk: int
    peer_id: str
    network_id: int


@dataclass(frozen=True, slots=True)
class Report:
    """One counter report of one socket, with that socket's previous report."""

    reporter: Reporter
    stats: messages.Stats
    previous: messages.Stats | None
    interval_s: float


def ingest_batch(reports: list[Report], now: datetime | None = None) -> list[dict]:
    """Store the samples of many reports in one transaction (a few queries, whatever their number);
    returns one dashboard update `{"network", "peer_id"}` (network id, reporter) per report that
    produced samples: pages re-read what they show, so the update carries no figures."""
    now = now or timezone.now()
    if not reports:
        return []
    with transaction.atomic():
        reporters = {r.reporter.pk for r in reports}
        Presence.objects.filter(node_id__in=reporters).update(last_seen=now, online=True)
        usable = [r for r in reports if r.previous is not None and r.interval_s > 0
                  and r.stats.uptime_s >= r.previous.uptime_s]
        wanted: dict[int, set[str]] = {}
        for r in usable:
            wanted.setdefault(r.reporter.network_id, set()).update(p.peer_id for p in r.stats.peers)
        known: set[tuple[int, str]] = set()
        for network_id, ids in wanted.items():
            known.update((network_id, pid) for pid in Node.objects.filter(
                network_id=network_id, peer_id__in=ids).values_list("peer_id", flat=True))
        per_report: list[tuple[Report, list[Sample]]] = []
        for r in usable:
            rows = _samples(r, known, now)
            if rows:
                per_report.append((r, rows))
        Sample.objects.bulk_create([s for _, rows in per_report for s in rows])
        _store_dht(reports, now)
    events.reports_stored(len(reports), sum(len(rows) for _, rows in per_report))
    ephemeral.reap_if_due()  # the embedded default has no beat (mesh/services/ephemeral.py)
    return [{"network": r.reporter.network_id, "peer_id": r.reporter.peer_id} for r, _ in per_report]


def _samples(r: Report, known: set[tuple[int, str]], now: datetime) -> list[Sample]:
    before = {p.peer_id: p for p in (r.previous.peers if r.previous is not None else ())}
    rows = []
    for p in r.stats.peers:
        old = before.get(p.peer_id)
        if old is None or p.peer_id == r.reporter.peer_id or (r.reporter.network_id, p.peer_id) not in known:
            continue
        rows.append(Sample(
            network_id=r.reporter.network_id, node_id=r.reporter.pk, peer_id=p.peer_id,
            resolution=Resolution.RAW, ts=now, interval_s=r.interval_s, path=p.path, rtt_ms=p.rtt_ms,
            last_handshake_s=p.last_handshake_s, **asdict(difference(p, old))))
    return rows


def _dht_changed(cur: DhtCounters, prev: DhtCounters | None, interval_s: float) -> bool:
    """Anything but the growing age of the last publish: new counts, or a publish since `prev`."""
    if prev is None or (cur.contacts, cur.records, cur.lookups, cur.failures) != \
            (prev.contacts, prev.records, prev.lookups, prev.failures):
        return True
    if cur.last_publish_s is None or prev.last_publish_s is None:
        return cur.last_publish_s != prev.last_publish_s
    return cur.last_publish_s < prev.last_publish_s + interval_s - 1.0  # published again meanwhile


def _store_dht(reports: list[Report], now: datetime) -> None:
    changed = {r.reporter.pk: r.stats.dht for r in reports if r.stats.dht is not None and _dht_changed(
        r.stats.dht, None if r.previous is None else r.previous.dht, r.interval_s)}
    if not changed:
        return
    rows = list(Presence.objects.filter(node_id__in=changed))
    for row in rows:
        row.dht, row.dht_at = dht_to_dict(changed[row.node_id]), now
    Presence.objects.bulk_update(rows, ["dht", "dht_at"])


def ingest(reporter: Reporter, stats: messages.Stats, previous: messages.Stats | None, interval_s: float,
           now: datetime | None = None) -> dict | None:
    """Store one report (see ingest_batch); returns its dashboard update or None."""
    updates = ingest_batch([Report(reporter, stats, previous, interval_s)], now)
    return updates[0] if updates else None
