"""The access policy as a netmap carries it: a default and prefix-level rules. Pure.

A `Policy` tells one agent what may reach it and what it may reach:

  - `default` "allow": the agent accepts every packet (today's full mesh); `rules` is empty.
  - `default` "deny": the agent accepts a packet only when a rule allows it, or when it belongs
    to a flow this node started that a rule allows (the reply direction: nodeagent/policy/).

A `Rule` allows packets whose source address is in one of `src`, whose destination address is
in one of `dst`, whose protocol is `proto` ("any", "tcp", "udp" or "icmp": ICMP for IPv4,
ICMPv6 for IPv6) and, for tcp and udp, whose destination port is in one of `ports` (inclusive
ranges; empty means every port). Rules only ever allow; their order means nothing.

The server (meshadmin/netmap/policy.py) resolves tags, groups and nodes into these prefixes and
sends each node only the rules that concern it: those whose `dst` is its own addresses (what
may reach it) and those whose `src` is (what it may reach). A serverless agent reads the same
rules from its configuration file (nodeagent/config.py).

The plain-data form (`policy_to_dict`, inside the netmap's) is strict like the rest of the
netmap: prefixes with host bits zero, ports 1..65535 with lo <= hi and only for tcp and udp,
rules only with the default "deny". Parsing returns the canonical form: prefixes and rules
sorted and unique, port ranges sorted and merged, so equal policies compare and encode equal.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .strict import Malformed, StrictMap

__all__ = [
    "ALLOW",
    "ALLOW_ALL",
    "DEFAULTS",
    "DENY",
    "PORT_PROTOCOLS",
    "PROTOCOLS",
    "Policy",
    "Rule",
    "canonical_ports",
    "canonical_prefixes",
    "check_policy",
    "check_rule",
    "format_ports",
    "parse_ports",
    "policy_from_dict",
    "policy_to_dict",
    "rule_from_dict",
    "rule_to_dict",
]

ALLOW = "allow"
DENY = "deny"
DEFAULTS = (ALLOW, DENY)
PROTOCOLS = ("any", "tcp", "udp", "icmp")
PORT_PROTOCOLS = ("tcp", "udp")  # the protocols whose rules may name ports
MAX_PREFIX_TEXT = 49  # "ffff:...:ffff/128" is 43; the netmap's bound for a prefix string

PortRange = tuple[int, int]


@dataclass(frozen=True, slots=True, order=True)
class Rule:
    """Packets from `src` to `dst` with `proto` (and, for tcp/udp, a destination port in `ports`)
    are allowed. Prefixes are canonical strings; `ports` empty means every port."""

    src: tuple[str, ...]
    dst: tuple[str, ...]
    proto: str = "any"
    ports: tuple[PortRange, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    default: str = ALLOW
    rules: tuple[Rule, ...] = ()

    @property
    def filters(self) -> bool:
        """Whether an agent holding this policy filters its inbound packets at all."""
        return self.default == DENY


ALLOW_ALL = Policy()


# ----------------------------------------------------------------------------- canonical forms


def canonical_prefixes(prefixes: object, what: str = "prefixes") -> tuple[str, ...]:
    """Sorted (IPv4 before IPv6, then by address and length), unique, host bits zero. A bare
    address is its host prefix. ValueError names the offending item."""
    if isinstance(prefixes, str) or not isinstance(prefixes, list | tuple):
        raise ValueError(f"{what} must be a list of prefixes")
    nets = set()
    for p in prefixes:
        if not isinstance(p, str) or not 1 <= len(p) <= MAX_PREFIX_TEXT:
            raise ValueError(f"{what}: {p!r} is not a prefix")
        try:
            nets.add(ipaddress.ip_network(p, strict=True))
        except ValueError:
            raise ValueError(f"{what}: {p!r} is not a prefix with its host bits zero") from None
    if not nets:
        raise ValueError(f"{what} must name at least one prefix")
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))


def canonical_ports(ranges: object, what: str = "ports") -> tuple[PortRange, ...]:
    """Sorted, overlapping and adjacent ranges merged; each 1 <= lo <= hi <= 65535."""
    if isinstance(ranges, str) or not isinstance(ranges, list | tuple):
        raise ValueError(f"{what} must be a list of port ranges")
    pairs = []
    for r in ranges:
        if (not isinstance(r, list | tuple) or len(r) != 2
                or any(type(x) is not int for x in r) or not 1 <= r[0] <= r[1] <= 65535):
            raise ValueError(f"{what}: {r!r} is not a port range [lo, hi] with 1 <= lo <= hi <= 65535")
        pairs.append((r[0], r[1]))
    merged: list[PortRange] = []
    for lo, hi in sorted(pairs):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def parse_ports(text: str) -> tuple[PortRange, ...]:
    """'22, 80, 8000-8080' -> ((22, 22), (80, 80), (8000, 8080)); '' or '*' -> () (every port).
    ValueError names the item that is not a port or a range."""
    text = (text or "").strip()
    if text in ("", "*"):
        return ()
    ranges = []
    for item in text.replace(" ", "").split(","):
        lo, sep, hi = item.partition("-")
        if not (lo.isascii() and lo.isdigit()) or (sep and not (hi.isascii() and hi.isdigit())):
            raise ValueError(f"{item!r} is not a port or a range like 8000-8080")
        first, last = int(lo), int(hi) if sep else int(lo)
        if not 1 <= first <= 65535 or not 1 <= last <= 65535:
            raise ValueError(f"{item!r}: ports are 1..65535")
        if first > last:
            raise ValueError(f"{item!r}: a range goes from the lower port to the higher")
        ranges.append((first, last))
    return canonical_ports(ranges)


def format_ports(ports: tuple[PortRange, ...]) -> str:
    """The text form parse_ports reads: '22, 8000-8080'; '' for every port."""
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports)


def check_rule(src: object, dst: object, proto: object, ports: object, what: str = "rule") -> Rule:
    """A canonical Rule from loose parts; ValueError names the field."""
    if proto not in PROTOCOLS:
        raise ValueError(f"{what}.proto must be one of {', '.join(PROTOCOLS)}")
    ranges = canonical_ports(ports, f"{what}.ports")
    if ranges and proto not in PORT_PROTOCOLS:
        raise ValueError(f"{what}.ports: only tcp and udp rules name ports")
    return Rule(canonical_prefixes(src, f"{what}.src"), canonical_prefixes(dst, f"{what}.dst"),
                str(proto), ranges)


def check_policy(default: object, rules: object) -> Policy:
    """A canonical Policy (rules sorted and unique); ValueError names the field."""
    if default not in DEFAULTS:
        raise ValueError("policy.default must be 'allow' or 'deny'")
    if not isinstance(rules, list | tuple):
        raise ValueError("policy.rules must be a list")
    if rules and default == ALLOW:
        raise ValueError("policy.rules must be empty when the default is 'allow' (rules only allow)")
    return Policy(str(default), tuple(sorted(set(rules))))


# ----------------------------------------------------------------------------- plain data


def rule_to_dict(r: Rule) -> dict[str, object]:
    return {"src": list(r.src), "dst": list(r.dst), "proto": r.proto, "ports": [list(p) for p in r.ports]}


def policy_to_dict(p: Policy) -> dict[str, object]:
    return {"default": p.default, "rules": [rule_to_dict(r) for r in p.rules]}


def rule_from_dict(v: object) -> Rule:
    o = StrictMap(v, "rule")
    src, dst, proto, ports = o.list("src"), o.list("dst"), o.str("proto", 8), o.list("ports")
    o.done()
    try:
        return check_rule(src, dst, proto, ports)
    except ValueError as exc:
        raise Malformed(str(exc)) from None


def policy_from_dict(v: object) -> Policy:
    o = StrictMap(v, "policy")
    default = o.str("default", 8)
    rules = [rule_from_dict(r) for r in o.list("rules") or ()]
    o.done()
    try:
        return check_policy(default, rules)
    except ValueError as exc:
        raise Malformed(str(exc)) from None
