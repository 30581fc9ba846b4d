"""Every page costs the same number of queries whether the mesh has three nodes or six."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from meshadmin.telemetry import ingest, presence
from nodeagent.protocol import messages
from nodeagent.protocol.counters import PeerCounters

pytestmark = pytest.mark.django_db


def _link(a, b, now):
    reporter = ingest.Reporter(a.pk, a.peer_id, a.network_id)
    first = messages.Stats(1, (PeerCounters(b.peer_id, "direct", rtt_ms=5.0),))
    second = messages.Stats(3, (PeerCounters(b.peer_id, "direct", rtt_ms=5.0, rx_bytes=1000,
                                                   tx_bytes=1000, rx_frames=10, tx_frames=10),))
    ingest.ingest(reporter, first, None, 0.0, now)
    ingest.ingest(reporter, second, first, 2.0, now)


def _counts(admin, paths):
    counts = {}
    for path in paths:
        with CaptureQueriesContext(connection) as ctx:
            assert admin.get(path).status_code == 200
        counts[path] = len(ctx.captured_queries)
    return counts


def test_page_query_counts_do_not_grow_with_the_mesh(admin, mesh, enroll_node):
    now = timezone.now()
    for node in mesh.values():
        presence.connected(node.pk, now)
    _link(mesh["uk"], mesh["belgium"], now)
    paths = ["/", "/map/", "/map/graph.json", "/nodes/", f"/nodes/{mesh['uk'].peer_id}/",
             f"/nodes/{mesh['uk'].peer_id}/series.json", "/audit/", "/tokens/", "/routes/"]
    small = _counts(admin, paths)
    extra = [enroll_node(f"extra-{i}") for i in range(3)]
    for node in extra:
        presence.connected(node.pk, now)
        _link(node, mesh["uk"], now)
    assert _counts(admin, paths) == small
