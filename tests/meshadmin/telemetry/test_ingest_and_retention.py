"""Counter reports become per-link samples (deltas), roll up into minutes, and expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshadmin.mesh.models import Node
from meshadmin.telemetry import ingest, presence, queries, tasks
from meshadmin.telemetry.models import Presence, Resolution, Sample
from nodeagent.protocol import messages
from nodeagent.protocol.counters import PeerCounters

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def report(uptime, peer_id, tx_bytes, rx_frames, lost, rtt=1.0, path="direct"):
    peer = PeerCounters(peer_id, path, rtt_ms=rtt, tx_bytes=tx_bytes, rx_bytes=tx_bytes // 2,
                        tx_frames=rx_frames, rx_frames=rx_frames, lost_frames=lost)
    return messages.Stats(uptime, (peer,))


@pytest.fixture
def link(uk, belgium):
    node = Node.objects.get(peer_id=belgium[0].peer_id)
    Presence.objects.create(node=node)
    return ingest.Reporter(node.pk, node.peer_id, node.network_id), uk[0].peer_id


def test_the_first_report_is_only_a_baseline(link):
    reporter, peer = link
    assert ingest.ingest(reporter, report(2, peer, 1000, 10, 0), None, 0.0, T0) is None
    assert Sample.objects.count() == 0


def test_the_next_report_stores_the_difference_and_readers_get_its_rates(link):
    reporter, peer = link
    first = report(2, peer, 1000, 10, 0)
    update = ingest.ingest(reporter, report(4, peer, 5000, 28, 2, rtt=3.5), first, 2.0, T0)
    s = Sample.objects.get()
    assert (s.tx_bytes, s.rx_frames, s.lost_frames, s.interval_s) == (4000, 18, 2, 2.0)
    (fig,) = queries.current_links(reporter.network_id, T0)
    assert fig.peer == peer and fig.rates.tx_bytes_per_s == 2000.0 and fig.rtt_ms == 3.5
    assert fig.rates.loss_pct == pytest.approx(10.0)
    assert update == {"peer_id": reporter.peer_id, "network": reporter.network_id}, "no figures nobody reads"


def test_a_restarted_agent_sets_a_new_baseline(link):
    reporter, peer = link
    before = report(500, peer, 10**6, 900, 0)
    assert ingest.ingest(reporter, report(1, peer, 10, 1, 0), before, 2.0, T0) is None


def test_smaller_totals_count_from_zero(link):
    reporter, peer = link
    ingest.ingest(reporter, report(10, peer, 300, 3, 0), report(8, peer, 10**6, 900, 0), 2.0, T0)
    assert Sample.objects.get().tx_bytes == 300


def test_peers_outside_the_network_are_dropped(link):
    reporter, _ = link
    stranger = "f" * 40
    before = report(2, stranger, 1, 1, 0)
    assert ingest.ingest(reporter, report(4, stranger, 9, 9, 0), before, 2.0, T0) is None
    assert Sample.objects.count() == 0


def _raw(reporter, peer, ts, tx, rtt):
    return Sample.objects.create(network_id=reporter.network_id, node_id=reporter.pk, peer_id=peer, ts=ts,
                                 interval_s=2.0, path="direct", rtt_ms=rtt, tx_bytes=tx, rx_frames=10)


def test_rollup_sums_a_finished_minute_once(link):
    reporter, peer = link
    for i, (tx, rtt) in enumerate([(100, 1.0), (200, 3.0), (300, None)]):
        _raw(reporter, peer, T0 + timedelta(seconds=2 * i), tx, rtt)
    _raw(reporter, peer, T0 + timedelta(minutes=1, seconds=5), 999, 9.0)  # minute not finished yet
    assert tasks.rollup(now=T0 + timedelta(minutes=1, seconds=30)) == 3
    assert tasks.rollup(now=T0 + timedelta(minutes=1, seconds=30)) == 0
    m = Sample.objects.get(resolution=Resolution.MINUTE)
    assert (m.ts, m.tx_bytes, m.rx_frames, m.samples, m.interval_s) == (T0, 600, 30, 3, 6.0)
    assert m.rtt_ms == pytest.approx(2.0)
    # a late raw sample of the same minute is added into the existing row
    _raw(reporter, peer, T0 + timedelta(seconds=50), 400, 5.0)
    tasks.rollup(now=T0 + timedelta(minutes=2))
    m.refresh_from_db()
    assert m.tx_bytes == 1000 and m.samples == 4 and m.rtt_ms == pytest.approx(3.0)


def test_prune_keeps_an_hour_of_raw_and_a_week_of_minutes(link):
    reporter, peer = link
    now = T0 + timedelta(days=10)
    old_raw = _raw(reporter, peer, now - timedelta(hours=2), 1, None)
    Sample.objects.filter(pk=old_raw.pk).update(rolled_up=True)
    unrolled = _raw(reporter, peer, now - timedelta(hours=2), 1, None)
    fresh = _raw(reporter, peer, now - timedelta(minutes=5), 1, None)
    old_min = Sample.objects.create(network_id=reporter.network_id, node_id=reporter.pk, peer_id=peer,
                                    resolution=Resolution.MINUTE, ts=now - timedelta(days=8), interval_s=60,
                                    path="direct")
    week_min = Sample.objects.create(network_id=reporter.network_id, node_id=reporter.pk, peer_id=peer,
                                     resolution=Resolution.MINUTE, ts=now - timedelta(days=6), interval_s=60,
                                     path="direct")
    assert tasks.prune(now=now) == 2
    left = set(Sample.objects.values_list("pk", flat=True))
    assert left == {unrolled.pk, fresh.pk, week_min.pk} and old_min.pk not in left


def test_presence_counts_sockets_and_the_sweep_marks_silent_nodes_offline(belgium):
    node = Node.objects.get(peer_id=belgium[0].peer_id)
    assert presence.connected(node.pk, T0) is True
    assert presence.connected(node.pk, T0) is False  # second socket (another server process)
    assert presence.disconnected(node.pk, T0) is False
    assert Presence.objects.get(node=node).online
    assert presence.sweep_stale(T0 + presence.STALE_AFTER + timedelta(seconds=1)) == [node.pk]
    assert not Presence.objects.get(node=node).online


def test_acks_of_many_nodes_are_stored_by_serial_and_others_are_left_alone(uk, belgium, mac):
    """What the stats buffer stores each second (both backends: pass 2 runs it on PostgreSQL,
    where the nodes go as one array)."""
    nodes = list(Node.objects.order_by("pk"))
    assert len(nodes) >= 3
    for n in nodes:
        Presence.objects.create(node=n, last_serial=1)
    *acking, untouched = nodes
    acks = {n.pk: (7 if i % 2 else 9) for i, n in enumerate(acking)}
    presence.acked_many(acks)
    stored = dict(Presence.objects.values_list("node_id", "last_serial"))
    assert {pk: stored[pk] for pk in acks} == acks
    assert stored[untouched.pk] == 1
    presence.acked_many({})  # nothing to store: no error
