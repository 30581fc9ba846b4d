"""NAT boxes and firewalls: a router namespace with a WAN link and a LAN bridge, and its nftables rules
(and `block()`, the one filter a plain namespace gets).

    box = lab.nat("home", uplink=inet, wan="198.18.0.10/24", lan="198.18.10.1/24", kind="easy")
    box.attach(host, "198.18.10.2/24")          # a LAN host, default route via the box

The box's devices are `wan` (a veth into the uplink segment) and `lan` (a bridge inside the box
holding the LAN address; each attached host has a veth port on it, so two hosts attached to one box
are behind the same NAT and reach each other on the LAN). `uplink` is a Segment, or another box
(its LAN), which chains two NATs: a home NAT behind a carrier-grade NAT.

Kinds (Linux behaviour, RFC 4787 terms):
- `easy`: `masquerade`. Endpoint-independent mapping: the inside source port is kept when free and
  one mapping serves every destination. Address-and-port-dependent filtering: inbound passes only
  from an ip:port the inside has sent to.
- `hard`: `masquerade fully-random`. A new random port (1024-65535) for every destination.
- `firewall`: no translation. The LAN holds addresses that the uplink routes to the box, and inbound
  passes only as the reply to something the inside sent (the same filtering as the NATs).

All three drop unsolicited inbound: in the forward chain (from `wan`, only replies reach the LAN)
and in the input chain (nothing addressed to the box itself from `wan` is accepted). The input drop
is deliberate. A Linux router that accepts an unsolicited packet to its own ip:port keeps a
conntrack entry for it; when the inside host later sends from that port to the same remote ip:port,
the new mapping clashes with the stale entry and masquerade moves the host to a random port, so two
peers probing each other's routers keep each other's stale entries alive and never meet. A packet
dropped in the input filter chain is never confirmed into the conntrack table, so no stale entry
exists and the inside keeps its port, as behind a home router (tests/lab shows both: the remap on a
bare box, none on ours). `bare=True` builds a NAT box without any filter, to reproduce the deadlock
on purpose.

Every table is named after the lab's prefix and lives inside the box's namespace, so it goes with it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab.links import Segment, bridge, default_route, up
from lab.netns import Netns

if TYPE_CHECKING:
    from lab.core import Lab

KINDS = ("easy", "hard", "firewall")
WAN, LAN = "wan", "lan"


def ruleset(table: str, kind: str, bare: bool = False) -> str:
    """The box's nftables rules (input for `nft -f -`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if bare and kind == "firewall":
        raise ValueError("a bare firewall filters nothing: use a plain router")
    rules = []
    if not bare:
        rules.append(f"""table inet {table} {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{WAN}" ct state established,related accept
        iifname "{WAN}" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{WAN}" ct state established,related accept
        iifname "{WAN}" drop
    }}
}}""")
    if kind != "firewall":
        flags = " fully-random" if kind == "hard" else ""
        rules.append(f"""table ip {table}nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{WAN}" masquerade{flags}
    }}
}}""")
    return "\n".join(rules) + "\n"


@dataclass
class NatBox:
    ns: Netns
    kind: str
    wan_ip: str
    lan: Segment  # the LAN bridge inside the box

    @property
    def lan_ip(self) -> str:
        return self.lan.ip or ""

    def attach(self, host: Netns, addr: str, dev: str | None = None) -> str:
        """Put `host` on the LAN with `addr`, default route via the box. -> its device name."""
        return self.lan.join(host, addr, gateway=self.lan_ip, dev=dev)


def build(lab: Lab, role: str, uplink: Segment | NatBox, wan: str, lan: str, kind: str = "easy",
          gateway: str | None = None, bare: bool = False) -> NatBox:
    """A router namespace `role` on `uplink` with address `wan`, a LAN bridge with address `lan` and
    the rules of `kind`. `gateway` (default: the uplink box's LAN address, or none on a flat
    segment) becomes the box's default route."""
    text = ruleset(lab.prefix, kind, bare)  # a bad kind fails before anything is built
    if isinstance(uplink, NatBox):
        gateway = gateway or uplink.lan_ip
        uplink = uplink.lan
    ns = lab.netns(role)
    ns.sysctl("net.ipv4.ip_forward", "1")
    uplink.join(ns, wan, dev=WAN)
    if gateway:
        default_route(ns, gateway)
    bridge(ns, LAN)
    up(ns, LAN, lan)
    ns.run("nft", "-f", "-", input=text)
    if kind == "firewall":  # the LAN is routed, not translated: the uplink learns the way to it
        uplink.route(str(ipaddress.ip_interface(lan).network), wan.split("/")[0])
    return NatBox(ns, kind, wan.split("/")[0], Segment(lab, ns, LAN, lan))


def block(ns: Netns, table: str, *addrs: str) -> None:
    """`ns` neither accepts from nor sends to `addrs` (two nodes that must meet through a relay)."""
    src = "\n".join(f"        ip saddr {a} drop" for a in addrs)
    dst = "\n".join(f"        ip daddr {a} drop" for a in addrs)
    ns.run("nft", "-f", "-", input=f"""table inet {table}block {{
    chain input {{
        type filter hook input priority filter; policy accept;
{src}
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
{dst}
    }}
}}
""")
