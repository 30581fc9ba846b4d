"""Links between namespaces: veth pairs, bridges, and L2 segments built from them.

A veth end is created directly inside its namespace (`ip link add NAME netns NS ...`), so nothing
appears in the host unless the caller asks for a host end (`ns=None`). A `Segment` is one bridge
(in a namespace of its own, inside a router, or in the host) with one veth per member.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import TYPE_CHECKING

from lab.cmd import LabError, sh
from lab.netns import Netns

if TYPE_CHECKING:
    from lab.core import Lab


UNDERLAY = ipaddress.ip_network("198.18.0.0/15")  # the benchmarking range (RFC 2544): never routed


def underlay(addr: str) -> str:
    """`addr` (an address or prefix) if it lies in 198.18.0.0/15, else LabError."""
    try:
        net = ipaddress.ip_network(addr, strict=False)
    except ValueError as e:
        raise LabError(f"{addr!r} is not an IPv4 address or prefix") from e
    if net.version != 4 or not net.subnet_of(UNDERLAY):
        raise LabError(f"{addr}: lab addresses must come from {UNDERLAY}")
    return addr


def _ip(ns: Netns | None, *args: str) -> None:
    sh("ip", *(("-n", ns.name) if ns is not None else ()), *args)


def veth(a: Netns | None, a_dev: str, b: Netns | None, b_dev: str) -> None:
    """One veth pair, `a_dev` in `a` and `b_dev` in `b` (None: the host), both down, no address."""
    where_a = ("netns", a.name) if a is not None else ()
    where_b = ("netns", b.name) if b is not None else ()
    sh("ip", "link", "add", a_dev, *where_a, "type", "veth", "peer", "name", b_dev, *where_b)


def up(ns: Netns | None, dev: str, addr: str | None = None) -> None:
    """Give `dev` the address `addr` (with its prefix length), if any, and bring it up."""
    if addr:
        _ip(ns, "addr", "add", underlay(addr), "dev", dev)
    _ip(ns, "link", "set", dev, "up")


def bridge(ns: Netns | None, name: str) -> None:
    """A bridge, down, with a fixed, locally administered MAC: otherwise it takes the lowest MAC of its
    ports and changes it as members join, and a member that cached the old one is cut off until its
    ARP entry goes stale."""
    mac = "02:" + ":".join(secrets.token_hex(1) for _ in range(5))
    _ip(ns, "link", "add", name, "address", mac, "type", "bridge")


def default_route(ns: Netns, gateway: str) -> None:
    ns.run("ip", "route", "replace", "default", "via", gateway)


class Segment:
    """One L2 segment: the bridge `bridge` in `ns` (None: the host) and a veth per member."""

    def __init__(self, lab: Lab, ns: Netns | None, bridge: str, addr: str | None = None) -> None:
        self.lab, self.ns, self.bridge, self.addr = lab, ns, bridge, addr
        self.members: dict[Netns, str] = {}  # member -> its address on the segment
        self.routes: list[tuple[str, str]] = []  # (prefix, via): installed on every member

    @property
    def ip(self) -> str | None:
        """The bridge's own address (a router's LAN address, the host's end of a host bridge)."""
        return self.addr.split("/")[0] if self.addr else None

    def join(self, ns: Netns, addr: str, gateway: str | None = None, dev: str | None = None) -> str:
        """Connect `ns` with address `addr` (and a default route via `gateway`). -> its device name."""
        port = self.lab.link_name("p")
        dev = dev or self.lab.link_name("e")
        if self.ns is None:  # a host end: written down, since it is not inside a namespace of ours
            self.lab.make("links", port, lambda: veth(ns, dev, None, port))
        else:
            veth(ns, dev, self.ns, port)
        _ip(self.ns, "link", "set", port, "master", self.bridge)
        up(self.ns, port)
        up(ns, dev, addr)
        if gateway:
            default_route(ns, gateway)
        ip = addr.split("/")[0]
        for prefix, via in self.routes:
            if via != ip:
                ns.run("ip", "route", "replace", prefix, "via", via)
        self.members[ns] = ip
        return dev

    def route(self, prefix: str, via: str) -> None:
        """Every member (present and future) reaches `prefix` through the member at `via`."""
        self.routes.append((underlay(prefix), underlay(via)))
        for ns, ip in self.members.items():
            if ip != via:
                ns.run("ip", "route", "replace", prefix, "via", via)


def free_host_subnet(first: str = "198.19") -> str:
    """`first`.N (a /24) that no host interface uses yet: two host bridges with one subnet would split
    the replies between them (a run killed before its teardown leaves its bridge behind)."""
    used = sh("ip", "-4", "-o", "addr").stdout
    for _ in range(100):
        subnet = f"{first}.{secrets.randbelow(240) + 10}"
        if f" {subnet}." not in used:
            return subnet
    raise LabError(f"no free {first}.N.0/24 on this host")
