"""Endpoint candidates: where a peer might be reached on UDP, which of them may be probed, and ours. Pure.

A candidate is an (address, port) with a kind (protocol/disco.py `CandidateKind`):
  local           an interface address of the node (a peer behind the same NAT reaches it there)
  observed        the websocket's source address as the server saw it, with the UDP port (a guess
                  that holds for NATs that keep the port)
  reflexive       the UDP source a public hub saw on the data port (PROBE_ACK's observed address)
  peer-reflexive  the source of an authenticated probe from the peer itself
  configured      the endpoint the netmap reports (or a configuration names)

Validation (`check_endpoint`) is the project's one endpoint check (protocol/endpoints.py): it
refuses what no peer can be reached on, or what would turn a probe into traffic for somebody
else (the unspecified, loopback, link-local, multicast and broadcast addresses, ports outside
1..65535); here an IPv4-mapped address is also written as the IPv4 address it carries, so one
address is one candidate. `CandidateSet` keeps at most
MAX_CANDIDATES per peer (a peer cannot make us probe more addresses than that), never our own
addresses, and forgets a peer-reflexive candidate PEER_REFLEXIVE_IDLE_S after it was last seen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol.disco import MAX_CANDIDATES, CandidateKind, WireCandidate
from ..protocol.endpoints import BadEndpoint, check_endpoint_ip, check_port

__all__ = [
    "MAX_CANDIDATES",
    "PEER_REFLEXIVE_IDLE_S",
    "Candidate",
    "CandidateError",
    "CandidateSet",
    "check_endpoint",
    "direct_kind",
    "local_candidates",
]

PEER_REFLEXIVE_IDLE_S = 45.0
# probing order: the LAN first (cheapest, and the only way between hosts behind one NAT), then
# what hubs saw, then the server's guess, then the rest
_ORDER = {
    CandidateKind.LOCAL: 0,
    CandidateKind.REFLEXIVE: 1,
    CandidateKind.PEER_REFLEXIVE: 2,
    CandidateKind.OBSERVED: 3,
    CandidateKind.CONFIGURED: 4,
}


class CandidateError(ValueError):
    """An address or port that may not be used as a candidate."""


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: CandidateKind
    ip: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)

    def wire(self) -> WireCandidate:
        return WireCandidate(self.kind, self.ip, self.port)


def check_endpoint(ip: str, port: int) -> tuple[str, int]:
    """(normalised ip, port) of a usable candidate, or CandidateError naming what is wrong."""
    try:
        check_port(port)
        addr = check_endpoint_ip(ip)
    except BadEndpoint as exc:
        raise CandidateError(str(exc)) from None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr), port


def local_candidates(
    addresses: Iterable[tuple[str, int, str]],
    port: int,
    *,
    skip_interfaces: Iterable[str] = (),
    skip_networks: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
) -> list[Candidate]:
    """Our local candidates from the interface addresses (address, prefix length, interface name):
    every usable address on `port`, except on `skip_interfaces` (the TUN) and inside
    `skip_networks` (the overlay and what is routed into it: a peer never reaches us there)."""
    skip_if = set(skip_interfaces)
    nets = [ipaddress.ip_network(n) for n in skip_networks]
    out, seen = [], set()
    for ip, _plen, ifname in addresses:
        if ifname in skip_if:
            continue
        try:
            ip, p = check_endpoint(ip, port)
        except CandidateError:
            continue
        a = ipaddress.ip_address(ip)
        if any(a.version == n.version and a in n for n in nets) or (ip, p) in seen:
            continue
        seen.add((ip, p))
        out.append(Candidate(CandidateKind.LOCAL, ip, p))
    return out[:MAX_CANDIDATES]


def direct_kind(addr: tuple[str, int],
                local_networks: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network], *,
                punched: bool) -> str:
    """How a direct path was made, for status: "lan" (the peer's address is on one of our own
    networks), "punched" (found by probing candidates), else "public" (dialed directly)."""
    try:
        a = ipaddress.ip_address(addr[0])
    except ValueError:
        return "punched" if punched else "public"
    for n in local_networks:
        n = ipaddress.ip_network(n, strict=False)
        if a.version == n.version and a in n:
            return "lan"
    return "punched" if punched else "public"


class CandidateSet:
    """One peer's candidates, at most MAX_CANDIDATES, never one of our own addresses."""

    def __init__(self, own: Iterable[tuple[str, int]] = ()) -> None:
        self.own = set(own)
        self.entries: dict[tuple[str, int], tuple[Candidate, float]] = {}  # addr -> (candidate, last seen)
        self.refused = 0  # candidates dropped by validation or the cap

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, addr: object) -> bool:
        return addr in self.entries

    def set_own(self, own: Iterable[tuple[str, int]]) -> None:
        self.own = set(own)
        for addr in [a for a in self.entries if a in self.own]:
            del self.entries[addr]

    def add(self, kind: CandidateKind, ip: str, port: int, now: float) -> bool:
        """Add or refresh one candidate; True if it is new (an address we had not had)."""
        try:
            ip, port = check_endpoint(ip, port)
        except CandidateError:
            self.refused += 1
            return False
        addr = (ip, port)
        if addr in self.own:
            self.refused += 1
            return False
        old = self.entries.get(addr)
        if old is not None:
            best = kind if _ORDER[kind] < _ORDER[old[0].kind] else old[0].kind
            self.entries[addr] = (Candidate(best, ip, port), now)
            return False
        if len(self.entries) >= MAX_CANDIDATES and not self._evict(kind):
            self.refused += 1
            return False
        self.entries[addr] = (Candidate(kind, ip, port), now)
        return True

    def merge(self, candidates: Iterable[Candidate | WireCandidate], now: float) -> bool:
        """Add many (Candidate or WireCandidate); True if any is new."""
        new = False
        for c in candidates:
            new |= self.add(CandidateKind(c.kind), c.ip, c.port, now)
        return new

    def replace_kinds(self, kinds: Iterable[CandidateKind], candidates: Iterable[Candidate | WireCandidate],
                      now: float) -> bool:
        """The authoritative list for `kinds` (the netmap's): drop those of these kinds that are
        gone, add the rest. True if any is new."""
        kinds = set(kinds)
        keep = {(c.ip, c.port) for c in candidates}
        for addr, (c, _seen) in list(self.entries.items()):
            if c.kind in kinds and addr not in keep:
                del self.entries[addr]
        return self.merge(candidates, now)

    def _evict(self, kind: CandidateKind) -> bool:
        """Room for a `kind` candidate in a full set: the oldest peer-reflexive one goes, or a
        candidate of a lower rank than `kind`."""
        worst = max(self.entries.items(), key=lambda kv: (_ORDER[kv[1][0].kind], -kv[1][1]))
        if _ORDER[worst[1][0].kind] <= _ORDER[kind] and worst[1][0].kind is not CandidateKind.PEER_REFLEXIVE:
            return False
        del self.entries[worst[0]]
        return True

    def expire(self, now: float) -> None:
        for addr, (c, seen) in list(self.entries.items()):
            if c.kind is CandidateKind.PEER_REFLEXIVE and now - seen > PEER_REFLEXIVE_IDLE_S:
                del self.entries[addr]

    def ordered(self) -> list[Candidate]:
        """Candidates in probing order (local, reflexive, peer-reflexive, observed, configured)."""
        return [
            c for c, _ in sorted(self.entries.values(), key=lambda e: (_ORDER[e[0].kind], e[0].ip, e[0].port))
        ]

    def kind_of(self, addr: tuple[str, int]) -> CandidateKind | None:
        e = self.entries.get(addr)
        return None if e is None else e[0].kind
