"""Enrolled agents with a real meshadmin: enroll with tokens, netmaps applied live, revocation, a server
that goes away and comes back. The server is Daphne on embedded SQLite in the test's tmp dir."""

from __future__ import annotations

import itertools
import signal
import sys
import time

import pytest

from tests.integration.agentlab import wait_for
from tests.integration.meshlab import Mesh

pytestmark = pytest.mark.privileged


@pytest.fixture
def mesh(lab, request):
    m = Mesh(lab)
    yield m  # the lab's teardown ends the agents and the server
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for n in m.nodes:
            sys.stderr.write(f"\n--- agent {n.name} ---\n{n.log_text()[-5000:]}\n")
        sys.stderr.write(f"\n--- server ---\n{m.server.log.read_text(errors='replace')[-3000:]}\n")


def four_nodes(mesh: Mesh):
    """uk is the public hub; belgium and starlink cannot reach each other directly (as in the demo)."""
    uk = mesh.node("uk", public=True)
    belgium, starlink = mesh.node("belgium", start=False), mesh.node("starlink", start=False)
    mesh.block(belgium, starlink)
    belgium.start()
    starlink.start()
    mac = mesh.node("mac")
    return uk, belgium, starlink, mac


def test_four_enrolled_nodes_reach_each_other_pairwise(mesh):
    nodes = four_nodes(mesh)
    for a, b in itertools.permutations(nodes, 2):
        mesh.wait_ping(a, b, timeout=30)
    uk, belgium, starlink, _mac = nodes
    paths = {p["peer_id"]: p["path"] for p in belgium.status()["peers"]}
    assert paths[starlink.peer_id] == f"relay:{uk.peer_id}"
    assert paths[uk.peer_id] == "direct"
    doc = belgium.status()
    assert doc["node"]["overlay_ip"] == belgium.overlay_ip
    assert doc["node"]["server"] == "connected"
    # counters reach the server (every 2 s): a stored sample of belgium's link to starlink, relayed
    # (samples are deltas between reports, so traffic has to flow while we wait)
    def sampled():
        return mesh.ping(belgium, starlink) and stored_sample(mesh, belgium, starlink)

    tx_frames, path = wait_for(sampled, 15, "a counters sample on the server")
    assert tx_frames > 0 and path == f"relay:{uk.peer_id}"


def stored_sample(mesh: Mesh, node, peer):
    code = ("from meshadmin.telemetry.models import Sample; "
            f"s = Sample.objects.filter(node__peer_id='{node.peer_id}', peer_id='{peer.peer_id}', "
            "tx_frames__gt=0)"
            ".order_by('-pk').first(); print('none' if s is None else f'{s.tx_frames} {s.path}')")
    out = mesh.server.manage("shell", "-c", code).strip().splitlines()[-1]
    if out == "none":
        return None
    frames, path = out.split()
    return (int(frames), path) if int(frames) > 0 else None


def test_a_revoked_node_is_dropped_by_every_peer_and_cannot_come_back(mesh):
    uk, belgium, starlink, mac = four_nodes(mesh)
    for other in (uk, belgium, starlink):
        mesh.wait_ping(mac, other, timeout=30)
        wait_for(lambda o=other: mac.peer_id in o.peer_ids(), 10, f"{other.name} lists mac")
    mesh.revoke(mac)
    # the push is debounced 0.1 s here; every peer must drop mac within 2 s of it arriving
    for other in (uk, belgium, starlink):
        wait_for(lambda o=other: mac.peer_id not in o.peer_ids(), 5, f"{other.name} drops mac")
        assert mac.peer_id in other.status()["node"]["revoked_peers"]
    wait_for(lambda: mac.status()["node"]["server"] == "revoked", 10, "mac learns it was revoked")
    assert not mesh.ping(mac, uk, count=2, timeout=0.5)
    # restarted, the revoked node still cannot handshake with anyone (it keeps its old netmap)
    mac.stop()
    mac.start()
    doc = mac.status()
    assert doc["peers"] == [] and doc["node"]["server"] == "revoked"  # it remembers, with no server needed
    # a revoked key that tries anyway (marker gone, old netmap with its peers): every peer refuses it
    mac.stop()
    (mac.state / "revoked").unlink()
    mac.start()
    time.sleep(3)
    assert not mesh.ping(mac, uk, count=2, timeout=0.5)
    assert not mesh.ping(mac, belgium, count=1, timeout=0.5)
    assert "RevokedPeer" in uk.log_text() or "not a peer we accept" in uk.log_text()


def test_a_stream_survives_a_third_node_joining_and_a_fourth_being_revoked(mesh):
    uk = mesh.node("uk", public=True)
    belgium, mac = mesh.node("belgium"), mesh.node("mac")
    mesh.wait_ping(belgium, mac, timeout=30)
    sink = mesh.lab.tool_bg(mac.ns, "sink", "5010")
    assert sink.stdout.readline().strip() == "listening"
    # the stream runs until the changes are done (a stop file), however long they take here
    stop = mesh.lab.tmp / "stop-stream"
    source = mesh.lab.tool_bg(belgium.ns, "source", mac.overlay_ip, "5010", str(5_000_000_000),
                              "--rate-mbit", "20", "--stop-file", str(stop))
    starlink = mesh.node("starlink")  # joins while the stream runs
    wait_for(lambda: starlink.peer_id in belgium.peer_ids() and starlink.peer_id in mac.peer_ids(), 10,
             "belgium and mac add starlink")
    mesh.wait_ping(starlink, belgium, timeout=20)
    mesh.revoke(uk)  # the hub goes while the stream runs
    wait_for(lambda: uk.peer_id not in belgium.peer_ids() and uk.peer_id not in mac.peer_ids(), 5,
             "belgium and mac drop uk")
    assert source.poll() is None, "the stream ended before the changes"
    stop.touch()
    sent = source.communicate(timeout=120)[0].strip()
    assert source.returncode == 0
    assert sink.communicate(timeout=60)[0].strip() == sent  # every byte, in order
    assert int(sent.split()[1]) > 1_000_000


def test_a_route_added_and_removed_by_the_operator_is_applied_live(mesh):
    uk = mesh.node("uk", public=True)
    belgium, mac = mesh.node("belgium"), mesh.node("mac")
    mesh.wait_ping(belgium, mac, timeout=30)
    mac.ns.run("ip", "addr", "add", "192.168.77.1/32", "dev", "lo")  # the subnet behind mac
    tool = mesh.lab.tool
    assert tool(belgium.ns, "ping", "192.168.77.1", "--count", "1", "--timeout", "0.5").returncode != 0
    mesh.add_route(mac, "192.168.77.0/24")

    def belgium_routes_it():
        peer = next(p for p in belgium.status()["peers"] if p["peer_id"] == mac.peer_id)
        return peer["allowed_ips"] == ["192.168.77.0/24"]

    wait_for(belgium_routes_it, 5, "belgium's status lists the route via mac")
    assert "192.168.77.0/24" in belgium.ns.run("ip", "route").stdout
    wait_for(lambda: tool(belgium.ns, "ping", "192.168.77.1", "--count", "1").returncode == 0, 10,
             "belgium reaches the subnet behind mac")
    assert uk.peer_ids() == {belgium.peer_id, mac.peer_id}
    mesh.remove_route("192.168.77.0/24")
    wait_for(lambda: not belgium_routes_it(), 5, "belgium's status drops the route")
    assert "192.168.77.0/24" not in belgium.ns.run("ip", "route").stdout
    assert tool(belgium.ns, "ping", "192.168.77.1", "--count", "1", "--timeout", "0.5").returncode != 0


def test_tunnels_outlive_the_server_and_agents_reconnect_when_it_returns(mesh):
    uk, belgium, starlink, mac = four_nodes(mesh)
    mesh.wait_ping(belgium, starlink, timeout=30)
    mesh.wait_ping(mac, uk, timeout=30)
    pinger = mesh.lab.tool_bg(belgium.ns, "ping", starlink.overlay_ip, "--count", "60", "--interval", "0.1",
                              "--timeout", "1")
    mesh.server.stop()
    for n in (uk, belgium, starlink, mac):
        wait_for(lambda n=n: n.status()["node"]["server"] == "disconnected", 10,
                 f"{n.name} sees the server go")
    assert mesh.ping(mac, uk, count=3)
    # an agent restarted while the server is down comes up on its persisted netmap
    mac.stop()
    mac.start()
    mesh.wait_ping(mac, uk, timeout=15)
    mesh.wait_ping(mac, belgium, timeout=15)
    mesh.server.start()
    for n in (uk, belgium, starlink, mac):
        wait_for(lambda n=n: n.status()["node"]["server"] == "connected", 10, f"{n.name} reconnects")
    out = pinger.communicate(timeout=60)[0]
    received = int(out.split()[-1])
    assert received == 60, out  # no echo lost while the server was away


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_stopping_an_enrolled_agent_removes_its_device(mesh, sig):
    uk = mesh.node("uk", public=True)
    iface = uk.status()["node"]["interface"]
    assert iface in uk.ns.run("ip", "-o", "link").stdout
    uk.stop(sig)
    assert iface not in uk.ns.run("ip", "-o", "link").stdout
