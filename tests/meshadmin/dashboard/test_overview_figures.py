"""The overview page shows what issue 5 asks of it (networks, online/offline, total traffic, worst
links, recent audit events) and the node page shows each link's handshake age.

Reports go in through the live link's ingest (meshadmin.telemetry.ingest), as the agent socket does.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from meshadmin.telemetry import ingest, presence
from nodeagent.protocol import messages
from nodeagent.protocol.counters import PeerCounters

pytestmark = pytest.mark.django_db


def _peer(peer_id, *, rx=0, tx=0, frames=0, handshake=4.0):
    return PeerCounters(peer_id, "direct", rtt_ms=12.0, tx_bytes=tx, rx_bytes=rx, tx_frames=frames,
                        rx_frames=frames, lost_frames=0, last_handshake_s=handshake)


@pytest.fixture
def reported(mesh):
    """uk and belgium online; belgium received 250 kB from uk in 2 s (its second report)."""
    now = timezone.now()
    for name in ("uk", "belgium"):
        presence.connected(mesh[name].pk, now)
    node = mesh["belgium"]
    reporter = ingest.Reporter(node.pk, node.peer_id, node.network_id)
    uk = mesh["uk"].peer_id
    first = messages.Stats(10, (_peer(uk),))
    second = messages.Stats(12, (_peer(uk, rx=250_000, tx=500_000, frames=100, handshake=4.0),))
    ingest.ingest(reporter, first, None, 0.0, now - timedelta(seconds=2))
    ingest.ingest(reporter, second, first, 2.0, now)
    return mesh


def _stat(html: str, label: str) -> str:
    match = re.search(rf'<div class="label">{label}</div><div class="value"[^>]*>(.*?)</div>', html, re.S)
    assert match, f"no {label!r} figure on the page"
    return re.sub(r"<[^>]+>", "", match.group(1)).split()


def test_the_overview_counts_nodes_and_totals_the_traffic_of_the_last_hour(admin, reported):
    html = admin.get("/").content.decode()
    assert _stat(html, "Networks") == ["1"]
    assert _stat(html, "Nodes online") == ["2", "/", "3"]
    assert _stat(html, "Offline") == ["1"]
    assert _stat(html, "Moved, last hour") == ["250", "kB"]  # belgium's received bytes, counted once


def test_the_overview_lists_the_reported_link_and_the_recent_enrollments(admin, reported):
    html = admin.get("/").content.decode()
    worst = html.split("<h2>Worst links</h2>", 1)[1].split("</section>", 1)[0]
    assert f'/nodes/{reported["belgium"].peer_id}/' in worst and f'/nodes/{reported["uk"].peer_id}/' in worst
    recent = html.split("<h2>Recent events", 1)[1].split("</section>", 1)[0]
    assert recent.count("Node enrolled") == 3  # uk, belgium and the XSS probe


def test_an_overview_without_reports_says_so(admin, mesh):
    html = admin.get("/").content.decode()
    assert "No active links reported yet." in html
    assert _stat(html, "Nodes online") == ["0", "/", "3"]
    assert _stat(html, "Moved, last hour") == ["0", "B"]


def test_the_node_page_shows_how_long_ago_each_link_handshook(admin, reported):
    html = admin.get(f"/nodes/{reported['belgium'].peer_id}/").content.decode()
    row = html.split(f'data-peer-id="{reported["uk"].peer_id}"', 1)[1].split("</tr>", 1)[0]
    assert "4 s ago" in row
