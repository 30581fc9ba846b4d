"""The benchmark's two namespaces, `a` (198.19.0.1) and `b` (198.19.0.2), on one veth pair.

Everything is built by a `lab.Lab` (lab/ at the project root): names carry the run's prefix, and
leaving the Lab's `with` block (normally, on an exception, Ctrl-C or SIGTERM) ends every process in
the namespaces, deletes them with their veth and TUN devices, and removes the files registered with
`lab.remove_on_exit` (wireguard-go's control sockets).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab import Lab, Netns


@dataclass(frozen=True)
class Node(Netns):
    underlay_ip: str = ""


@dataclass
class Pair:
    lab: Lab
    a: Node
    b: Node

    @classmethod
    def build(cls, lab: Lab) -> Pair:
        a, b = Node(lab.netns("a").name, "198.19.0.1"), Node(lab.netns("b").name, "198.19.0.2")
        lab.veth(a, f"{a.underlay_ip}/24", b, f"{b.underlay_ip}/24")
        return cls(lab, a, b)
