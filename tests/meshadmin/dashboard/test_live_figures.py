"""Pages show what agents reported: presence, per-link path/RTT/loss/rates, the map and the hour charts.

Reports go in through the live link's own ingest (meshadmin.telemetry.ingest), as the agent
socket does, so these tests read exactly what production stores.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from meshadmin.telemetry import ingest, presence
from nodeagent.protocol import messages
from nodeagent.protocol.counters import PeerCounters

pytestmark = pytest.mark.django_db


def _stats(uptime, peers):
    return messages.Stats(uptime, tuple(peers))


def _peer(peer_id, *, path="direct", rtt=12.0, tx=0, rx=0, rx_frames=0, lost=0, handshake=4.0):
    return PeerCounters(peer_id, path, rtt_ms=rtt, tx_bytes=tx, rx_bytes=rx, tx_frames=rx_frames,
                        rx_frames=rx_frames, lost_frames=lost, last_handshake_s=handshake)


def report_link(reporter_node, peer_node, *, now, path="direct", rtt=12.0, rate=125_000, loss_of_100=0):
    """Two reports 2 s apart from `reporter_node` about `peer_node`: rx = `rate` B/s, tx = 2*rate."""
    reporter = ingest.Reporter(reporter_node.pk, reporter_node.peer_id, reporter_node.network_id)
    first = _stats(10, [_peer(peer_node.peer_id, path=path, rtt=rtt)])
    second = _stats(12, [_peer(peer_node.peer_id, path=path, rtt=rtt, rx=2 * rate, tx=4 * rate,
                               rx_frames=100 - loss_of_100, lost=loss_of_100)])
    ingest.ingest(reporter, first, None, 0.0, now - timedelta(seconds=2))
    return ingest.ingest(reporter, second, first, 2.0, now)


@pytest.fixture
def live(mesh):
    """uk and belgium online with a direct link; the XSS node enrolled but offline."""
    now = timezone.now()
    for name in ("uk", "belgium"):
        presence.connected(mesh[name].pk, now)
    report_link(mesh["belgium"], mesh["uk"], now=now, rtt=12.0, rate=125_000)
    return mesh


def test_connected_nodes_are_online_and_the_others_offline(admin, live):
    html = admin.get("/nodes/?sort=online").content.decode()
    states = dict(re.findall(r'data-peer-id="([0-9a-f]{40})" data-state="(\w+)"', html))
    assert states == {live["uk"].peer_id: "online", live["belgium"].peer_id: "online",
                      live["xss"].peer_id: "offline"}


def test_the_node_page_lists_each_link_with_path_rtt_loss_and_rates(admin, live):
    html = admin.get(f"/nodes/{live['belgium'].peer_id}/").content.decode()
    assert 'data-testid="links-table"' in html
    row = html.split(f'data-peer-id="{live["uk"].peer_id}"', 1)[1].split("</tr>", 1)[0]
    assert "direct" in row and "12 ms" in row and "0.0 %" in row
    assert "1.0 Mbit/s" in row, "rx 125 kB/s"
    assert "2.0 Mbit/s" in row, "tx 250 kB/s"
    # the other end sees the same link from its side: what belgium sent, uk received
    other = admin.get(f"/nodes/{live['uk'].peer_id}/").content.decode()
    row = other.split(f'data-peer-id="{live["belgium"].peer_id}"', 1)[1].split("</tr>", 1)[0]
    assert row.index("2.0 Mbit/s") < row.index("1.0 Mbit/s"), "rx column first: uk received 250 kB/s"


def test_the_map_graph_draws_the_link_and_greys_the_offline_node(admin, live):
    graph = admin.get("/map/graph.json").json()
    states = {n["data"]["label"]: n["data"]["state"] for n in graph["nodes"]}
    assert states["uk"] == "online" and states["<script>alert(1)</script>"] == "offline"
    hub = next(n for n in graph["nodes"] if n["data"]["label"] == "uk")
    assert hub["data"]["hub"] is True
    (edge,) = graph["edges"]
    assert {edge["data"]["source"], edge["data"]["target"]} == {live["uk"].peer_id, live["belgium"].peer_id}
    assert edge["data"]["path"] == "direct" and edge["data"]["quality"] == "good"
    assert edge["data"]["bytes_per_s"] == pytest.approx(375_000)


def test_a_relayed_lossy_link_is_marked_and_leads_the_worst_links(admin, live, enroll_node):
    mac = enroll_node("mac")
    now = timezone.now()
    presence.connected(mac.pk, now)
    report_link(mac, live["belgium"], now=now, path=f"relay:{live['uk'].peer_id}", rtt=180.0, loss_of_100=8)
    graph = admin.get("/map/graph.json").json()
    relayed = next(e["data"] for e in graph["edges"] if e["data"]["path"] == "relay")
    assert relayed["via_name"] == "uk" and relayed["quality"] == "bad"
    assert relayed["loss_pct"] == pytest.approx(8.0)
    overview = admin.get("/").content.decode()
    worst = overview.split("Worst links", 1)[1]
    assert worst.index("mac") < worst.index("uk</a>"), "the bad relayed link is listed first"
    assert "relay via uk" in worst


def test_a_revoked_node_leaves_the_map_and_its_links_go(admin, live, csrf_post):
    csrf_post(admin, f"/nodes/{live['uk'].peer_id}/revoke")
    graph = admin.get("/map/graph.json").json()
    assert live["uk"].peer_id not in {n["data"]["id"] for n in graph["nodes"]}
    assert graph["edges"] == []


def test_the_hour_series_has_traffic_and_per_peer_rtt(admin, live):
    data = admin.get(f"/nodes/{live['belgium'].peer_id}/series.json").json()
    assert 1 <= len(data["t"]) == len(data["rx_bytes_per_s"]) == len(data["tx_bytes_per_s"]) <= 120
    assert max(v for v in data["rx_bytes_per_s"] if v is not None) == pytest.approx(125_000)
    (peer,) = data["peers"]
    assert peer["name"] == "uk" and len(peer["rtt_ms"]) == len(data["t"])
    assert 12.0 in peer["rtt_ms"] and 0.0 in peer["loss_pct"]
    assert admin.get(f"/nodes/{live['xss'].peer_id}/series.json").json()["t"] == []


def test_live_regions_come_back_as_partials(admin, live):
    full = admin.get("/nodes/").content.decode()
    htmx = {"HX-Request": "true", "HX-Target": "div#nodes-table"}
    part = admin.get("/nodes/", headers=htmx).content.decode()
    assert "<html" in full and "<html" not in part
    assert 'data-testid="nodes-table"' in part and live["uk"].peer_id in part
    node_part = admin.get(f"/nodes/{live['belgium'].peer_id}/",
                          headers={"HX-Request": "true", "HX-Target": "div#node-live"}).content.decode()
    assert "<html" not in node_part and 'data-testid="links-table"' in node_part
    unknown = admin.get("/nodes/", headers={"HX-Request": "true", "HX-Target": "div#elsewhere"})
    assert "<html" in unknown.content.decode()


def test_the_node_page_lists_the_path_changes_its_reports_show(admin, mesh):
    """belgium's link to uk goes relayed (through xss as a stand-in hub), then direct, then relayed
    again: the page lists both changes of the last hour, newest first, with the hub's name."""
    now = timezone.now()
    presence.connected(mesh["belgium"].pk, now)
    presence.connected(mesh["uk"].pk, now)
    reporter = ingest.Reporter(mesh["belgium"].pk, mesh["belgium"].peer_id, mesh["belgium"].network_id)
    relay = f"relay:{mesh['xss'].peer_id}"
    previous = None
    for i, path in enumerate([relay, relay, "direct", "direct", relay]):
        report = _stats(10 + 2 * i, [_peer(mesh["uk"].peer_id, path=path)])
        at = now - timedelta(seconds=10 - 2 * i)
        ingest.ingest(reporter, report, previous, 2.0 if previous else 0.0, at)
        previous = report
    html = admin.get(f"/nodes/{mesh['belgium'].peer_id}/").content.decode()
    table = html.split('data-testid="path-changes"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr data-peer-id=\"([0-9a-f]{40})\">(.*?)</tr>", table, re.S)
    assert [pid for pid, _ in rows] == [mesh["uk"].peer_id] * 2
    cells = [re.findall(r"<td>(.*?)</td>", body, re.S) for _, body in rows]
    assert cells[0][2] == "direct" and "relay via" in cells[0][3]  # newest: direct -> relay
    assert cells[1][2].startswith("relay via") and ">direct<" in cells[1][3]  # first: relay -> direct


def test_a_node_without_path_changes_says_so(admin, live):
    html = admin.get(f"/nodes/{live['belgium'].peer_id}/").content.decode()
    assert "No path changed in the last hour." in html


def test_the_node_page_shows_the_dht_its_agent_reports(admin, live):
    """The counter report carries the node's DHT (messages.Stats.dht): the node page shows it, the
    age of the last publish counted from the report; a report that changes only that age is not
    written again."""
    from meshadmin.telemetry.models import Presence
    from nodeagent.protocol.counters import DhtCounters

    node = live["belgium"]
    page = f"/nodes/{node.peer_id}/"
    assert 'data-testid="node-dht">\u2013<' in admin.get(page).content.decode()  # none reported yet
    reporter = ingest.Reporter(node.pk, node.peer_id, node.network_id)
    now = timezone.now()
    first = messages.Stats(20, (), DhtCounters(contacts=7, records=12, last_publish_s=20.0, lookups=4,
                                               failures=1))
    ingest.ingest(reporter, first, None, 0.0, now - timedelta(seconds=60))
    html = admin.get(page).content.decode()
    line = html.split('data-testid="node-dht">', 1)[1].split("</dd>", 1)[0]
    assert "7 contacts, 12 records held" in line and "4 lookups, 1 found nothing" in line
    assert re.search(r"published 8\d s ago", line)  # 20 s at the report, which is a minute old
    written = Presence.objects.get(node=node).dht_at
    later = messages.Stats(22, (), DhtCounters(7, 12, 22.0, 4, 1))  # only the age grew
    ingest.ingest(reporter, later, first, 2.0, now - timedelta(seconds=58))
    assert Presence.objects.get(node=node).dht_at == written
    republished = messages.Stats(24, (), DhtCounters(7, 12, 0.5, 5, 1))
    ingest.ingest(reporter, republished, later, 2.0, now)
    line = admin.get(page).content.decode().split('data-testid="node-dht">', 1)[1].split("</dd>", 1)[0]
    assert "published 0 s ago" in line or "published 1 s ago" in line
    assert "5 lookups" in line
