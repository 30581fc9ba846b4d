"""DNS names in namespaces with a real meshadmin and enrolled agents: `<name>.<network>.mesh` resolved
by the system's own resolver (glibc, `ping`) through the agent, a rename followed live, other names
forwarded to the node's former resolver (a lab DNS server) for the node itself and refused for
peers, strangers and malformed queries dropped and counted, and /etc/resolv.conf put back, also
after a SIGKILL. Every resolv.conf here is a namespace's own (/etc/netns/<name>/resolv.conf); the
host's is checked to be untouched."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.integration.agentlab import wait_for
from tests.integration.meshlab import Mesh

pytestmark = pytest.mark.privileged

HOST_RESOLV = Path("/etc/resolv.conf")


@pytest.fixture
def mesh(lab, request):
    m = Mesh(lab)
    yield m
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for n in m.nodes:
            sys.stderr.write(f"\n--- agent {n.name} ---\n{n.log_text()[-6000:]}\n")


def lookup(node, name: str) -> str | None:
    """The address glibc's resolver gives `name` inside the node's namespace (None: not found)."""
    out = node.ns.run("getent", "ahostsv4", name, check=False, timeout=20)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout else None


def query(mesh, ns, server: str, name: str, *args: str) -> str:
    return mesh.lab.tool(ns, "dns-query", server, name, *args).stdout.strip()


def test_mesh_names_resolve_follow_a_rename_and_the_resolver_comes_back(mesh):
    host_before = HOST_RESOLV.read_bytes()
    lab = mesh.lab
    resolver_ns = lab.netns("resolver")
    resolver_ip = f"{mesh.subnet}.200"
    mesh.segment.join(resolver_ns, f"{resolver_ip}/24", dev="eth0")
    dnsd = lab.tool_bg(resolver_ns, "dns-server", "53", "example.test=198.18.99.9")
    assert dnsd.stdout.readline().strip() == "ready"
    original = f"nameserver {resolver_ip}\nsearch lab.test\noptions timeout:1 attempts:2\n"

    uk = mesh.node("uk", public=True)
    starlink = mesh.node("starlink")
    belgium = mesh.node("belgium", up_args=("--dns",), resolv=original)
    netns_resolv = Path("/etc/netns") / belgium.ns.name / "resolv.conf"

    # the system resolver asks the agent: names of the mesh, then a real ping by name
    wait_for(lambda: lookup(belgium, "starlink.default.mesh") == starlink.overlay_ip, 20,
             "belgium resolves starlink.default.mesh")
    assert lookup(belgium, "UK.Default.Mesh") == uk.overlay_ip  # names compare without regard to case
    assert lookup(belgium, "belgium.default.mesh") == belgium.overlay_ip  # its own name too
    assert lookup(belgium, "starlink") == starlink.overlay_ip  # the suffix is first in the search list
    text = netns_resolv.read_text()
    assert f"nameserver {belgium.overlay_ip}\n" in text and "search default.mesh lab.test" in text
    assert f"nameserver {resolver_ip}" not in text and "options timeout:1 attempts:2" in text
    mesh.wait_ping(belgium, starlink, timeout=30)
    ping = belgium.ns.run("ping", "-c", "1", "-W", "3", "starlink.default.mesh", check=False, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert starlink.overlay_ip in ping.stdout

    # other names: forwarded to the resolver belgium had, for belgium itself
    assert lookup(belgium, "example.test") == "198.18.99.9"
    assert lookup(belgium, "nothing.default.mesh") is None  # NXDOMAIN from the agent, not forwarded
    # a peer gets the mesh's names from belgium's agent, and no recursion (REFUSED = 5)
    uk_answer = f"rcode 0 answers {uk.overlay_ip} tc 0"
    assert query(mesh, starlink.ns, belgium.overlay_ip, "uk.default.mesh") == uk_answer
    assert query(mesh, starlink.ns, belgium.overlay_ip, "example.test").startswith("rcode 5 answers - ")
    assert query(mesh, belgium.ns, belgium.overlay_ip, "uk.default.mesh", "--tcp") == \
        f"rcode 0 answers {uk.overlay_ip} tc 0"
    assert query(mesh, starlink.ns, belgium.overlay_ip, "nothing.default.mesh").startswith("rcode 3 ")

    # a query from outside the overlay (routed to belgium's overlay address over the underlay): no answer
    resolver_ns.run("ip", "route", "add", f"{belgium.overlay_ip}/32", "via", belgium.underlay)
    before = belgium.status()["node"]["dns"]
    assert query(mesh, resolver_ns, belgium.overlay_ip, "uk.default.mesh", "--timeout", "1") == "timeout"
    # garbage from a peer: dropped and counted, and the agent answers the next query as before
    garbage = [b"\x00", b"\xff" * 40, bytes.fromhex("abcd01000001000000000000") + b"\x05abc"]
    send = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n" + "".join(
        f"s.sendto({g!r},('{belgium.overlay_ip}',53))\n" for g in garbage)
    starlink.ns.run(sys.executable, "-c", send)
    wait_for(lambda: belgium.status()["node"]["dns"]["malformed"] >= before["malformed"] + len(garbage), 5,
             "belgium counts the malformed queries")
    after = belgium.status()["node"]["dns"]
    assert after["outside"] >= before["outside"] + 1
    assert query(mesh, starlink.ns, belgium.overlay_ip, "uk.default.mesh") == uk_answer

    # a rename reaches belgium's names with the next push
    mesh.rename(starlink, "mars")
    wait_for(lambda: lookup(belgium, "mars.default.mesh") == starlink.overlay_ip, 10,
             "belgium resolves the new name")
    assert lookup(belgium, "starlink.default.mesh") is None

    # stopped, the agent puts the namespace's resolv.conf back as it was
    belgium.stop(signal.SIGTERM)
    assert netns_resolv.read_text() == original
    # killed, it cannot: the next start does, even without --dns
    belgium.start()
    wait_for(lambda: f"nameserver {belgium.overlay_ip}" in netns_resolv.read_text(), 10, "--dns again")
    belgium.stop(signal.SIGKILL)
    assert f"nameserver {belgium.overlay_ip}" in netns_resolv.read_text()
    belgium.up_args = ()
    belgium.start()
    assert netns_resolv.read_text() == original
    assert lookup(belgium, "example.test") == "198.18.99.9"  # straight to the lab resolver again
    assert belgium.status()["node"]["dns"]["resolver"] == "untouched"
    assert HOST_RESOLV.read_bytes() == host_before
    dnsd.kill()
