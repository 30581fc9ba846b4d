"""snapshot.load reads a network in a fixed number of queries, whatever its size, and the rows it
returns are what compute needs (live records only, revoked nodes kept for the revocation list)."""

from __future__ import annotations

import pytest

from meshadmin.mesh.models import Node
from meshadmin.mesh.services.nodes import revoke_node
from meshadmin.mesh.services.peers import register_peer
from meshadmin.mesh.services.policies import (
    create_group,
    create_rule,
    create_tag,
    set_node_tags,
    set_policy_default,
)
from meshadmin.mesh.services.routes import create_route
from meshadmin.netmap import snapshot
from meshadmin.netmap.compute import netmaps_for_all
from nodeagent.protocol.cert import parse_certificate

pytestmark = pytest.mark.django_db


def test_loading_a_snapshot_takes_six_queries_for_three_nodes(
    network, uk, belgium, mac, django_assert_num_queries
):
    """The network, its nodes, routes, the tags on its nodes, its groups and its access rules."""
    with django_assert_num_queries(snapshot.QUERY_COUNT):
        snap = snapshot.load(network)
    assert len(snap.nodes) == 3 and snapshot.QUERY_COUNT == 6


def test_loading_a_snapshot_takes_the_same_queries_for_seven_nodes_with_a_policy(
    network, enrolled, django_assert_num_queries
):
    for i in range(7):
        enrolled(f"n{i}", public=i == 0)
    belgium = Node.objects.get(name="n1")
    create_route(belgium, "192.168.50.0/24", approved=True)
    create_tag(network, "web")
    create_tag(network, "db")
    for name in ("n2", "n3", "n4"):
        set_node_tags(Node.objects.get(name=name), ["web", "db"])
    create_group(network, "ops", ["tag:web", "node:n5"])
    create_rule(network, sources=["group:ops"], destinations=["tag:db"], protocol="tcp", ports="5432")
    create_rule(network, sources=["*"], destinations=["node:n6"], protocol="icmp")
    set_policy_default(network, "deny")
    with django_assert_num_queries(snapshot.QUERY_COUNT):
        snap = snapshot.load(network.pk)
    assert len(snap.nodes) == 7 and len(snap.routes) == 1
    assert snap.policy_default == "deny" and [r.position for r in snap.rules] == [1, 2]
    assert snap.rules[0].ports == ((5432, 5432),) and snap.groups[0].members[0] == "tag:web"
    assert {r.name: r.tags for r in snap.nodes}["n3"] == ("db", "web")


def test_the_snapshot_keeps_revoked_nodes_and_only_live_records(network, uk, belgium, mac):
    uk_node = Node.objects.get(peer_id=uk[0].peer_id)
    register_peer(
        uk_node, ip="198.18.0.1", port=8443, udp_port=9443, is_public=True, observed_ip="198.19.0.1"
    )
    mac_node = Node.objects.get(peer_id=mac[0].peer_id)
    revoke_node(mac_node)
    snap = snapshot.load(network)
    rows = {r.name: r for r in snap.nodes}
    assert rows["uk"].endpoint_ip == "198.18.0.1" and rows["uk"].observed_ip == "198.19.0.1"
    assert rows["belgium"].endpoint_ip is None
    assert not rows["mac"].active
    mac_node.refresh_from_db()
    assert rows["mac"].fingerprint == parse_certificate(bytes(mac_node.certificate)).fingerprint
    network.refresh_from_db()
    assert snap.serial == network.serial
    maps = netmaps_for_all(snap)
    assert set(maps) == {uk[0].peer_id, belgium[0].peer_id}
    belgium_map = maps[belgium[0].peer_id]
    assert [p.name for p in belgium_map.peers] == ["uk"]
    assert belgium_map.revoked[0].peer_id == mac[0].peer_id
    assert belgium_map.relays == (uk[0].peer_id,)
