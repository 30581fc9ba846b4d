"""The DHT with real enrolled agents in namespaces and the server STOPPED (issue 10): a node that
moved is found again, the node that enrolled last reaches nodes whose netmaps never listed it, and
a node revoked just before the server stopped is refused by all.

Each test fails without the DHT: run this module with SHADOWMESH_DHT=0 in the environment (every
agent inherits it and runs without the DHT) and each one times out at the step the DHT makes
possible. Waits are bounded and generous (a failure condition, never a speed claim): a dead
control link takes 3 keepalives + 5 s to be noticed, a dial backs off up to 60 s.
"""

from __future__ import annotations

import sys

import pytest

from nodeagent.server_link import load_netmap
from tests.integration.agentlab import wait_for
from tests.integration.meshlab import EnrolledNode, Mesh

pytestmark = pytest.mark.privileged


@pytest.fixture
def mesh(lab, request):
    m = Mesh(lab)
    yield m  # the lab's teardown ends the agents and the server
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for n in m.nodes:
            sys.stderr.write(f"\n--- agent {n.name} ---\n{n.log_text()[-8000:]}\n")
        sys.stderr.write(f"\n--- server ---\n{m.server.log.read_text(errors='replace')[-3000:]}\n")


def no_incoming(mesh: Mesh, node: EnrolledNode) -> None:
    """`node` sits behind a stateful firewall: it may dial out, nothing may dial in (replies to
    what it sent pass)."""
    node.ns.run("nft", "-f", "-", input=f"""table inet {mesh.lab.prefix}fw {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "eth0" ct state new drop
    }}
}}
""")


def peer(node: EnrolledNode, other: EnrolledNode) -> dict | None:
    return next((p for p in node.status()["peers"] if p["peer_id"] == other.peer_id), None)


def dht_settled(node: EnrolledNode) -> bool:
    """The node's DHT has published its record (trivially true for an agent without the DHT)."""
    dht = node.status()["node"]["dht"]
    return dht is None or dht["last_publish_s"] is not None


def tcp_flow(mesh: Mesh, src: EnrolledNode, dst: EnrolledNode, port: int, size: int = 2_000_000) -> None:
    """A TCP stream of `size` bytes from src to dst's overlay address arrives whole (the sink's
    byte count and digest equal the source's)."""
    sink = mesh.lab.tool_bg(dst.ns, "sink", str(port))
    assert sink.stdout.readline().strip() == "listening"
    sent = mesh.lab.tool(src.ns, "source", dst.overlay_ip, str(port), str(size), timeout=120)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip().startswith(f"bytes {size} ")
    assert sink.communicate(timeout=60)[0].strip() == sent.stdout.strip()


def stop_server(mesh: Mesh, nodes) -> None:
    mesh.server.stop()
    for n in nodes:
        wait_for(lambda n=n: n.status()["node"]["server"] == "disconnected", 15,
                 f"{n.name} sees the server go")


def test_a_node_that_moves_is_found_again_through_the_dht(mesh):
    """uk is the public hub; belgium accepts no incoming connection (it dials out); starlink
    advertises its address towards the server (no --endpoint), so its endpoint follows its address.
    With the server stopped starlink moves: belgium's link to it dies, the netmap's endpoint stops
    answering, starlink cannot dial belgium, and only starlink's new record in the DHT brings
    belgium back to it directly (they still reach each other through uk meanwhile)."""
    uk = mesh.node("uk", public=True)
    belgium = mesh.node("belgium", start=False)
    no_incoming(mesh, belgium)
    belgium.start()
    starlink = mesh.node("starlink", endpoint=False)
    mesh.wait_ping(belgium, starlink, timeout=30)
    wait_for(lambda: (peer(belgium, starlink) or {}).get("control") == "up", 30, "belgium's link to starlink")
    for n in (uk, belgium, starlink):
        wait_for(lambda n=n: dht_settled(n), 60, f"{n.name}'s DHT publishes its record")
    stop_server(mesh, (uk, belgium, starlink))

    new = mesh.move(starlink)

    def direct_again():
        p = peer(belgium, starlink)
        return p is not None and p["control"] == "up" and p["endpoint"] == f"{new}:9443"

    wait_for(direct_again, 150, f"belgium dials starlink at its new address {new}")
    mesh.wait_ping(belgium, starlink, timeout=20)
    assert peer(belgium, starlink)["path"] == "direct"
    tcp_flow(mesh, belgium, starlink, 5031)
    tcp_flow(mesh, starlink, belgium, 5032)
    assert belgium.status()["node"]["dht"]["lookups"] >= 1
    assert "endpoint" in belgium.log_text() and new in belgium.log_text()


def test_the_node_that_enrolled_last_reaches_nodes_whose_netmaps_never_listed_it(mesh):
    """uk (the public hub) and belgium enroll and stop; mac enrolls last (its netmap lists them);
    the server stops; uk and belgium start again from their persisted netmaps, which do not list
    mac. mac reaches both: they learn its record from the DHT, check its certificate offline and
    take it as a peer at its certificate's overlay address."""
    uk = mesh.node("uk", public=True)
    belgium = mesh.node("belgium")
    mesh.wait_ping(belgium, uk, timeout=30)
    uk.stop()
    belgium.stop()
    mac = mesh.node("mac")
    wait_for(lambda: {uk.peer_id, belgium.peer_id} <= mac.peer_ids(), 15, "mac's netmap lists uk and belgium")
    stop_server(mesh, (mac,))
    for n in (uk, belgium):
        persisted = load_netmap(n.state)
        assert persisted is not None and persisted.peer(mac.peer_id) is None
        n.start()

    mesh.wait_ping(mac, uk, timeout=120)
    mesh.wait_ping(mac, belgium, timeout=120)
    tcp_flow(mesh, uk, mac, 5033)  # towards a peer only the DHT gave uk
    tcp_flow(mesh, mac, belgium, 5034)
    for n in (uk, belgium):
        entry = peer(n, mac)
        assert entry is not None and entry["overlay_ip"] == mac.overlay_ip
        assert n.status()["node"]["dht"]["peers"] >= 1
        assert n.status()["node"]["server"] == "disconnected"


def test_a_node_revoked_just_before_the_server_stopped_is_refused_by_all(mesh):
    """uk (the public hub), belgium, mac and starlink. mac is stopped; the operator revokes
    starlink (uk and belgium get the netmap that says so, with the CA's signed list, which they
    store in the DHT); the server stops. mac comes back from its persisted netmap, which still
    lists starlink as a peer; starlink comes back too, its revocation marker removed and without
    the DHT (a revoked key that tries anyway), dialing everyone on its old netmap. mac learns the
    revocation from the CA's list in the DHT, and every node refuses starlink."""
    uk = mesh.node("uk", public=True)
    belgium, mac, starlink = mesh.node("belgium"), mesh.node("mac"), mesh.node("starlink")
    for n in (uk, belgium, mac):
        mesh.wait_ping(starlink, n, timeout=30)
    for n in (uk, belgium, mac, starlink):
        wait_for(lambda n=n: dht_settled(n), 60, f"{n.name}'s DHT publishes its record")
    mac.stop()
    mesh.revoke(starlink)
    for n in (uk, belgium):
        wait_for(lambda n=n: starlink.peer_id in n.status()["node"]["revoked_peers"], 15,
                 f"{n.name} applies the revocation")
    wait_for(lambda: starlink.status()["node"]["server"] == "revoked", 15, "starlink learns it was revoked")
    stop_server(mesh, (uk, belgium))
    starlink.stop()
    (starlink.state / "revoked").unlink()
    starlink.start(env={"SHADOWMESH_DHT": "0"})
    assert starlink.status()["node"]["dht"] is None
    persisted = load_netmap(mac.state)
    assert persisted.peer(starlink.peer_id) is not None and not persisted.revoked
    mac.start()

    def mac_refuses():
        doc = mac.status()
        return starlink.peer_id in doc["node"]["revoked_peers"] and \
            starlink.peer_id not in {p["peer_id"] for p in doc["peers"]}

    wait_for(mac_refuses, 90, "mac learns starlink's revocation from the DHT")
    for n in (uk, belgium, mac):
        assert not mesh.ping(starlink, n, count=3, timeout=1), f"revoked starlink still reaches {n.name}"
        doc = n.status()
        assert starlink.peer_id in doc["node"]["revoked_peers"]
        assert starlink.peer_id not in {p["peer_id"] for p in doc["peers"]}
    mesh.wait_ping(mac, uk, timeout=30)  # the others are untouched
    assert mac.status()["node"]["server"] == "disconnected"
