"""Exit nodes in namespaces with a real meshadmin and enrolled agents.

    internet (198.18.61.2) ── uk (public hub, offers itself as exit node) ── bridge ── server, mac
                                                                               └── NAT "home" ── belgium

The "internet" namespace is reachable only through uk. belgium sits behind a NAT box without any
route beyond the bridge, so everything it sends to the server and its peers goes through its
default route, the very route an exit node replaces: the classic bug would pull its own tunnel
and websocket into the tunnel. belgium starts with `up --exit-node uk`; an operator approves uk in
the dashboard; later removes it."""

from __future__ import annotations

import signal
import sys

import pytest

from tests.integration.agentlab import wait_for
from tests.integration.meshlab import Mesh

pytestmark = pytest.mark.privileged

INTERNET = "198.18.61.2"
UK_WAN = "198.18.61.1"
MARK = "0x736d0001"


@pytest.fixture
def mesh(lab, request):
    m = Mesh(lab)
    yield m
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for n in m.nodes:
            sys.stderr.write(f"\n--- agent {n.name} ---\n{n.log_text()[-6000:]}\n")


def reaches_internet(mesh, node, count: int = 1) -> bool:
    return mesh.lab.tool(node.ns, "ping", INTERNET, "--count", str(count), "--timeout", "1").returncode == 0


def exit_status(node) -> dict:
    return node.status()["node"]["exit_node"]


def interface(node) -> str:
    if not hasattr(node, "iface"):
        node.iface = node.status()["node"]["interface"]  # the same for the node's state dir, always
    return node.iface


def table(node) -> str | None:
    iface = interface(node)
    out = node.ns.run("nft", "list", "table", "inet", f"shadowmesh_{iface}", check=False)
    return out.stdout if out.returncode == 0 else None


def forwarding(node) -> str:
    return node.ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()


def rules(node) -> str:
    return node.ns.run("ip", "rule").stdout


def exit_host(mesh, up_args: tuple[str, ...] = ()):
    """uk, the public hub, with forwarding off as a new namespace may inherit the host's setting,
    and the "internet" namespace behind it; returns (uk, internet)."""
    uk = mesh.node("uk", public=True, up_args=up_args, start=False)
    uk.ns.sysctl("net.ipv4.ip_forward", "0")
    uk.start()
    internet = mesh.lab.netns("internet")
    mesh.lab.veth(uk.ns, f"{UK_WAN}/24", internet, f"{INTERNET}/24")
    return uk, internet


def test_a_client_reaches_the_internet_through_an_approved_exit_node_and_only_then(mesh):
    lab = mesh.lab
    uk, internet = exit_host(mesh, ("--advertise-exit-node",))
    mac = mesh.node("mac")
    home = mesh.nat("home", "198.18.44.1/24")
    belgium = mesh.node("belgium", behind=home, lan_addr="198.18.44.2", up_args=("--exit-node", "uk"))
    mesh.wait_ping(belgium, uk, timeout=30)
    mesh.wait_ping(belgium, mac, timeout=30)

    # offered, not approved: nobody uses it, uk forwards nothing, the internet is out of reach
    wait_for(lambda: "exit.advertised" in mesh.audit_actions(), 10, "uk's offer reaches the server")
    assert "not an approved exit node" in exit_status(belgium)["problem"]
    assert not exit_status(belgium)["routing"] and not exit_status(uk)["serving"]
    assert table(uk) is None and forwarding(uk) == "0"
    assert not reaches_internet(mesh, belgium)

    # the operator approves it: pushed, belgium routes through it, uk masquerades
    mesh.exit_node(uk, "approve")
    wait_for(lambda: exit_status(belgium)["routing"], 10, "belgium routes through uk")
    assert exit_status(belgium)["using"] == uk.peer_id and exit_status(belgium)["source"] == "flag"
    wait_for(lambda: exit_status(uk)["serving"], 10, "uk serves as exit node")
    assert "masquerade" in table(uk) and forwarding(uk) == "1"
    assert "suppress_prefixlength 0" in rules(belgium) and f"not from all fwmark {MARK}" in rules(belgium)
    wait_for(lambda: reaches_internet(mesh, belgium), 10, "belgium reaches the internet host")

    # the internet host sees uk's address
    echo = lab.tool_bg(internet, "udp-echo", "7000")
    assert echo.stdout.readline().strip() == "ready"
    talk = lab.tool_bg(belgium.ns, "udp-talk", "7001")
    assert talk.stdout.readline().strip() == "ready"
    talk.stdin.write(f"send {INTERNET} 7000\nrecv 5\n")
    talk.stdin.flush()
    assert talk.stdout.readline().strip() == "sent"
    answer = talk.stdout.readline().strip()
    assert answer.startswith(f"from {INTERNET}:7000 {UK_WAN}:"), answer

    # the underlay stays outside: marked (the agent's sockets) goes out eth0, the rest into the tunnel
    iface = belgium.status()["node"]["interface"]
    server = mesh.host_ip
    assert f"dev {iface}" in belgium.ns.run("ip", "route", "get", server).stdout
    assert "dev eth0" in belgium.ns.run("ip", "route", "get", server, "mark", MARK).stdout
    # ... so its server link and tunnels keep working: a node that joins now is pushed to belgium
    # over the websocket, and belgium reaches it at an endpoint it learns only now
    assert belgium.status()["node"]["server"] == "connected"
    starlink = mesh.node("starlink")
    mesh.wait_ping(belgium, starlink, timeout=30)
    mesh.wait_ping(belgium, mac, timeout=10)
    # belgium is behind a NAT: the first packets to a newcomer take the relay, and the direct path
    # follows once the punch (its probes marked, so outside the exit tunnel) is answered
    def direct_to_both() -> bool:
        paths = {p["peer_id"]: p["path"] for p in belgium.status()["peers"]}
        return paths.get(mac.peer_id) == "direct" and paths.get(starlink.peer_id) == "direct"

    wait_for(direct_to_both, 15, "belgium direct to mac and starlink")
    paths = {p["peer_id"]: p for p in belgium.status()["peers"]}
    # only the exit node may send from foreign addresses: its default route is its alone
    assert paths[uk.peer_id]["allowed_ips"] == ["0.0.0.0/0"] and paths[mac.peer_id]["allowed_ips"] == []

    # the operator removes it: the table, forwarding and belgium's rules go; the mesh stays
    mesh.exit_node(uk, "remove")
    # the agent removes the table, then turns forwarding off: wait for both, not the first alone
    wait_for(lambda: table(uk) is None and forwarding(uk) == "0" and not exit_status(uk)["serving"], 10,
             "uk's nft table removed and forwarding off")
    wait_for(lambda: not exit_status(belgium)["routing"], 10, "belgium stops routing through uk")
    assert "suppress_prefixlength" not in rules(belgium) and "29549" not in belgium.ns.run(
        "ip", "route", "show", "table", "all").stdout
    assert not reaches_internet(mesh, belgium)
    mesh.wait_ping(belgium, mac, timeout=10)
    actions = mesh.audit_actions()
    assert {"exit.advertised", "exit.approved", "exit.removed"} <= set(actions)
    echo.kill()
    talk.kill()


def test_the_dashboards_choice_and_what_a_killed_agent_leaves_behind(mesh):
    uk, _ = exit_host(mesh)
    home = mesh.nat("home", "198.18.44.1/24")
    belgium = mesh.node("belgium", behind=home, lan_addr="198.18.44.2")
    mesh.wait_ping(belgium, uk, timeout=30)
    mesh.exit_node(uk, "advertise")
    mesh.exit_node(uk, "approve")
    wait_for(lambda: exit_status(uk)["serving"], 10, "uk serves as exit node")
    assert not exit_status(belgium)["routing"]  # an exit node is used only when chosen
    assert not reaches_internet(mesh, belgium)
    mesh.use_exit(belgium, uk)  # chosen in the dashboard
    wait_for(lambda: exit_status(belgium)["routing"], 10, "belgium routes through uk")
    assert exit_status(belgium)["source"] == "dashboard"
    wait_for(lambda: reaches_internet(mesh, belgium), 10, "belgium reaches the internet host")

    # killed, neither can clean up: the next start does
    interface(uk)
    uk.stop(signal.SIGKILL)
    belgium.stop(signal.SIGKILL)
    assert table(uk) is not None and forwarding(uk) == "1"  # uk's namespace still holds them
    assert "suppress_prefixlength 0" in rules(belgium)
    mesh.use_exit(belgium, None)
    mesh.exit_node(uk, "remove")
    # at its next start each first undoes what the killed run left (before it serves its status),
    # then applies the map it persisted (uk an exit node, belgium using it: kept while the server
    # cannot be reached) until the server's current map, which has neither, arrives
    uk.start()
    belgium.start()
    assert uk.log_text().count("removed the exit node's nftables table an earlier run left") == 1
    assert belgium.log_text().count("removed exit-node routing rules an earlier run left") == 1
    wait_for(lambda: table(uk) is None and forwarding(uk) == "0", 10, "uk's table and forwarding gone")
    wait_for(lambda: "suppress_prefixlength" not in rules(belgium), 10, "belgium's exit rules gone")
    mesh.wait_ping(belgium, uk, timeout=30)
    assert not exit_status(belgium)["routing"] and not exit_status(uk)["serving"]
    # stopped normally while serving, the exit node removes its table itself
    mesh.exit_node(uk, "advertise")
    mesh.exit_node(uk, "approve")
    wait_for(lambda: exit_status(uk)["serving"], 10, "uk serves again")
    uk.stop(signal.SIGTERM)
    assert table(uk) is None and forwarding(uk) == "0"


def test_a_rule_to_the_internet_decides_who_uses_the_exit_node_and_on_what(mesh):
    """The internet is open until a rule names it (default allow); then only that rule's sources
    get the exit node, and the exit node forwards only what the rule allows (it filters: a UDP
    datagram from a node allowed ICMP alone is dropped there and counted). The mesh itself is
    untouched: every node still reaches the exit node."""
    lab = mesh.lab
    uk, internet = exit_host(mesh)
    belgium = mesh.node("belgium")
    mac = mesh.node("mac")
    mesh.wait_ping(belgium, uk, timeout=30)
    mesh.wait_ping(mac, uk, timeout=30)
    mesh.exit_node(uk, "advertise")
    mesh.exit_node(uk, "approve")
    for user in (belgium, mac):
        mesh.use_exit(user, uk)
    for user in (belgium, mac):
        wait_for(lambda user=user: reaches_internet(mesh, user), 15, f"{user.name} reaches the internet host")

    mesh.add_rule("node:belgium", "internet", "icmp")
    wait_for(lambda: not exit_status(mac)["routing"], 10, "mac no longer routes through uk")
    assert not reaches_internet(mesh, mac)
    assert exit_status(belgium)["routing"] and reaches_internet(mesh, belgium)
    mesh.wait_ping(mac, uk, timeout=10)  # the mesh still reaches uk itself
    wait_for(lambda: uk.status()["node"]["policy"]["default"] == "deny", 10, "uk filters, for the internet")

    echo = lab.tool_bg(internet, "udp-echo", "7000")
    assert echo.stdout.readline().strip() == "ready"
    talk = lab.tool_bg(belgium.ns, "udp-talk", "7001")
    assert talk.stdout.readline().strip() == "ready"
    refused = uk.status()["node"]["drops"]["policy"]
    talk.stdin.write(f"send {INTERNET} 7000\nrecv 2\n")
    talk.stdin.flush()
    assert talk.stdout.readline().strip() == "sent"
    assert talk.stdout.readline().strip() == "none"  # icmp only: uk dropped the datagram
    assert uk.status()["node"]["drops"]["policy"] > refused
    echo.kill()
    talk.kill()
