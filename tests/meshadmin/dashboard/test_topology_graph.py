"""meshadmin.dashboard.topology: graph JSON from nodes and per-link reports (pure, no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from meshadmin.dashboard.topology import NodeInfo, build_graph, link_quality
from meshadmin.telemetry.queries import LinkFigures
from nodeagent.protocol.counters import Rates

NOW = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
A, B, C, HUB = "a" * 40, "b" * 40, "c" * 40, "f" * 40


def node(peer_id, name, online=True, public=False, revoked=False):
    return NodeInfo(peer_id, name, "10.10.10.2", public, False, online, revoked)


def report(reporter, peer, *, path="direct", rtt=10.0, loss=0.0, rx=100.0, tx=200.0, age=1, hs=5.0):
    at = NOW - timedelta(seconds=age)
    return LinkFigures(reporter, at, peer, path, rtt, hs, Rates(tx, rx, 0.0, 0.0, loss))


NODES = [node(A, "alpha"), node(B, "bravo"), node(HUB, "uk", public=True), node(C, "charlie", online=False)]


@pytest.mark.parametrize(
    ("case", "loss", "rtt", "expected"),
    [
        (1, None, None, "unknown"),
        (2, 0.0, 10.0, "good"),
        (3, 0.99, 99.9, "good"),
        (4, 1.0, 10.0, "warn"),
        (5, 0.0, 100.0, "warn"),
        (6, 5.0, 10.0, "bad"),
        (7, 0.0, 250.0, "bad"),
        (8, None, 300.0, "bad"),
        (9, 7.0, None, "bad"),
    ],
)
def test_link_quality_follows_the_loss_and_rtt_thresholds(case, loss, rtt, expected):
    assert link_quality(loss, rtt) == expected, f"case {case}"


def test_both_ends_reporting_one_link_make_a_single_edge_with_a_stable_id():
    graph = build_graph(NODES, [report(B, A, rtt=14.0, loss=0.5), report(A, B, rtt=12.0, loss=2.0)], NOW)
    assert [e["data"]["id"] for e in graph["edges"]] == [f"{A}~{B}"]
    edge = graph["edges"][0]["data"]
    assert (edge["source"], edge["target"]) == (A, B)
    assert edge["rtt_ms"] == 14.0 and edge["loss_pct"] == 2.0, "the edge shows the worse view"
    assert edge["quality"] == "warn"


def test_traffic_each_way_is_taken_from_the_sender_when_it_reported():
    only_target = build_graph(NODES, [report(B, A, rx=300.0, tx=700.0)], NOW)["edges"][0]["data"]
    assert only_target["tx_bytes_per_s"] == 300.0, "A -> B seen by B as received"
    assert only_target["rx_bytes_per_s"] == 700.0
    both = build_graph(NODES, [report(B, A, rx=300.0, tx=700.0), report(A, B, rx=650.0, tx=310.0)], NOW)
    data = both["edges"][0]["data"]
    assert (data["tx_bytes_per_s"], data["rx_bytes_per_s"], data["bytes_per_s"]) == (310.0, 650.0, 960.0)


def test_a_relayed_link_is_marked_relay_and_names_the_relay():
    graph = build_graph(NODES, [report(A, B, path=f"relay:{HUB}")], NOW)
    data = graph["edges"][0]["data"]
    assert (data["path"], data["via"], data["via_name"]) == ("relay", HUB, "uk")
    assert graph["summary"]["relayed"] == 1


def test_stale_reports_and_links_to_offline_or_unknown_nodes_draw_no_edge():
    reports = [
        report(A, B, age=61),  # too old
        report(A, C),  # charlie is offline
        report(A, "d" * 40),  # not a node of this network
        report(A, A),  # itself
    ]
    assert build_graph(NODES, reports, NOW)["edges"] == []


def test_revoked_nodes_are_left_off_the_map_and_offline_nodes_stay_greyed():
    nodes = [*NODES, node("e" * 40, "evicted", revoked=True)]
    graph = build_graph(nodes, [], NOW)
    states = {n["data"]["label"]: n["data"]["state"] for n in graph["nodes"]}
    assert states == {"alpha": "online", "bravo": "online", "charlie": "offline", "uk": "online"}
    assert {n["data"]["label"]: n["data"]["hub"] for n in graph["nodes"]}["uk"] is True
    assert graph["summary"] == {"nodes": 4, "online": 3, "offline": 1, "links": 0, "relayed": 0}


def test_the_newest_report_from_a_reporter_wins():
    graph = build_graph(NODES, [report(A, B, rtt=300.0, age=20), report(A, B, rtt=20.0, age=2)], NOW)
    assert graph["edges"][0]["data"]["rtt_ms"] == 20.0


def test_a_hostile_node_name_is_passed_through_as_data_not_markup():
    graph = build_graph([node(A, "<script>alert(1)</script>")], [], NOW)
    assert graph["nodes"][0]["data"]["label"] == "<script>alert(1)</script>"
