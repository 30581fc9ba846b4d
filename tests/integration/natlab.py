"""The NAT matrix lab: enrolled agents behind the namespace lab's NAT boxes, a real meshadmin, two
public hubs.

The "Internet" is the host bridge of meshlab.Mesh (198.19.<random>.0/24): the server listens on its
host end, the two hubs (`hub1`, `hub2`, public nodes) and the WAN side of every NAT box sit on it.
A NAT box has no default route, so nothing leaves the bridge's subnet: a LAN address of another
site is unreachable, as on the Internet. Behind the boxes, each site has a LAN 198.18.<n>.0/24.

    world = NatWorld(lab)                      server + hub1 + hub2, running
    box = world.nat("home", "easy")            a NAT box on the Internet (lab/nat.py kinds)
    cgn = world.nat("cgn", "easy"); home = world.nat("home", "easy", uplink=cgn)   a CGNAT chain
    a = world.node("a", box)                   enrolled and running behind `box`
    world.blackhole(box, ip, ...)              box forwards no UDP to or from those addresses
    world.lift(box)
    Stream(world, a, b) ... .stop()            a rate-limited TCP stream over the overlay

A "firewall" box does not translate; its LAN is routed to it by every Internet member, but the
host (the server) has no route to it, so towards the server only the box masquerades.
"""

from __future__ import annotations

import itertools
import re
import time

from lab import NatBox
from tests.integration.agentlab import PYTHON, AgentLab, wait_for
from tests.integration.meshlab import EnrolledNode, Mesh


class NatWorld(Mesh):
    def __init__(self, lab: AgentLab) -> None:
        super().__init__(lab)
        self._lan = itertools.count(40)
        self.boxes: dict[str, NatBox] = {}
        self.hub1 = self.node("hub1", public=True)
        self.hub2 = self.node("hub2", public=True)

    def nat(self, role: str, kind: str, uplink: NatBox | None = None, bare: bool = False) -> NatBox:
        n = next(self._lan)
        if uplink is None:
            self._octet += 1
            box = self.lab.nat(
                role, self.segment, wan=f"{self.subnet}.{self._octet}/24", lan=f"198.18.{n}.1/24",
                kind=kind, bare=bare,
            )
        else:
            box = self.lab.nat(
                role, uplink, wan=f"{uplink.lan_ip.rsplit('.', 1)[0]}.2/24", lan=f"198.18.{n}.1/24",
                kind=kind, bare=bare,
            )
        if kind == "firewall":  # the host has no route to a routed LAN: only the server sees the box
            box.ns.run(
                "nft",
                "-f",
                "-",
                input=f"""table ip {self.lab.prefix}srv {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip daddr {self.host_ip} masquerade
    }}
}}
""",
            )
        self.boxes[role] = box
        return box

    def node(
        self, name: str, box: NatBox | None = None, public: bool = False, start: bool = True
    ) -> EnrolledNode:
        if box is None:
            return super().node(name, public=public, start=start)
        ns = self.lab.netns(name)
        prefix = box.lan_ip.rsplit(".", 1)[0]
        addr = f"{prefix}.{10 + sum(1 for _ in box.lan.members)}"
        box.attach(ns, f"{addr}/24", dev="eth0")
        tmp = self.lab.tmp
        node = EnrolledNode(self.lab, name, ns, addr, tmp / f"state-{name}", tmp / f"agent-{name}.log")
        self.nodes.append(node)
        out = ns.run(
            PYTHON,
            "-m",
            "nodeagent",
            "enroll",
            "--server",
            self.server.agent_url,
            "--token",
            self.server.token(),
            "--name",
            name,
            "--state-dir",
            str(node.state),
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"enroll {name} failed ({out.returncode}): {out.stderr}")
        node.peer_id = re.search(r"peer id:\s+([0-9a-f]{40})", out.stdout).group(1)
        node.overlay_ip = re.search(r"overlay ip:\s+(\S+)", out.stdout).group(1)
        if start:
            node.start()
        return node

    # --- impairments
    def blackhole(self, box: NatBox, *addrs: str) -> None:
        """`box` forwards no UDP to or from `addrs` (the direct path to a peer there dies; the hubs,
        elsewhere, still answer)."""
        rules = "\n".join(
            f"        ip daddr {a} meta l4proto udp drop\n        ip saddr {a} meta l4proto udp drop"
            for a in addrs
        )
        box.ns.run(
            "nft",
            "-f",
            "-",
            input=f"""table inet {self.lab.prefix}bh {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
{rules}
    }}
}}
""",
        )

    def lossy(self, node: EnrolledNode, percent: int) -> None:
        """`node` drops `percent` % of the UDP datagrams it receives, at random."""
        node.ns.run(
            "nft",
            "-f",
            "-",
            input=f"""table inet {self.lab.prefix}loss {{
    chain input {{
        type filter hook input priority -10; policy accept;
        meta l4proto udp numgen random mod 100 < {percent} drop
    }}
}}
""",
        )

    def lift(self, box: NatBox) -> None:
        box.ns.run("nft", "delete", "table", "inet", f"{self.lab.prefix}bh")

    def unblock(self, node: EnrolledNode) -> None:
        """Undo `block` (meshlab.Mesh) on `node`."""
        node.ns.run("nft", "delete", "table", "inet", f"{self.lab.prefix}block")

    # --- looking at a peer from a node
    @staticmethod
    def peer(node: EnrolledNode, other: EnrolledNode) -> dict:
        return next(p for p in node.status()["peers"] if p["peer_id"] == other.peer_id)

    def wait_path(self, node: EnrolledNode, other: EnrolledNode, pred, timeout: float, what: str) -> dict:
        return wait_for(
            lambda: (lambda p: p if pred(p) else None)(self.peer(node, other)),
            timeout,
            f"{node.name} -> {other.name}: {what}",
        )

    def relayed_bytes(self) -> int:
        return sum(h.status()["node"]["relay"]["forwarded_bytes"] for h in (self.hub1, self.hub2))


class Stream:
    """A TCP stream from `src` to `dst` over the overlay at `rate_mbit`, running until `stop()`; the
    sink's and the source's digests must agree (no byte lost, none doubled, the stream unbroken)."""

    def __init__(
        self, world: NatWorld, src: EnrolledNode, dst: EnrolledNode, port: int = 5201, rate_mbit: float = 4.0
    ) -> None:
        self.world = world
        self.stop_file = world.lab.tmp / f"stop-{src.name}-{dst.name}-{port}"
        self.sink = world.lab.tool_bg(dst.ns, "sink", str(port))
        assert self.sink.stdout.readline().strip() == "listening"
        self.source = world.lab.tool_bg(
            src.ns,
            "source",
            dst.overlay_ip,
            str(port),
            str(1 << 40),
            "--rate-mbit",
            str(rate_mbit),
            "--stop-file",
            str(self.stop_file),
        )
        self.started = time.monotonic()

    def stop(self, timeout: float = 60) -> tuple[str, str]:
        self.stop_file.write_text("stop\n")
        sent = self.source.communicate(timeout=timeout)
        got = self.sink.communicate(timeout=timeout)
        assert self.source.returncode == 0, f"source failed: {sent[1]}"
        return sent[0].strip(), got[0].strip()
