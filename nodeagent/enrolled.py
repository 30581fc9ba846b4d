"""Enrolled mode (`up --state-dir`): where a netmap is applied, and everything else only this mode has.

The node's settings come from the state directory (`enroll` wrote them, nodeagent.enroll) and
its peers from the netmap the server pushes, so the agent starts with no peers and adds them
live. The TUN gets the certificate's overlay address; handshakes present the certificate and
check peers against the mesh CA (protocol.trust.MeshCA, which also holds the revocation
list). A ServerLink (server_link.py) runs beside the tunnel (`EnrolledMode.run`); each netmap it
delivers (the persisted one first, so tunnels come up while the server is down) goes through
`apply_netmap`:
  1. a map for another node is ignored; so is every map once we were revoked ourselves
  2. revocations first: each revoked peer goes on the CA's revocation list, so no handshake of
     it can complete from now on; the CA accepts only the map's peers
  3. routing.plan diffs the applied map against the new one; its actions change the peer set
     live (peers.PeerSet: add / remove / update, a revoked peer's link closed with REVOKED and
     its keys wiped) and the hub role (SetSelf); a peer is dialed at its first endpoint that
     passes protocol/endpoints.py (loopback only when we listen on loopback ourselves)
  4. routes changed: the peers they go through get their new allowed prefixes
  5. the data path's routing table is rebuilt from routing.plan.routing_table(map), with the
     default route of the exit node in use, if any (routing/exits.py, exitnode.py), and the
     map's access policy replaces the data path's (set_policy; nodeagent/policy/)
  6. the kernel routes on the TUN follow (netlink, in a worker thread: pyroute2 runs its own
     event loop); a failure is logged and retried with the next map. A default route never goes
     there: the exit node's policy routing does (exitnode.py), and our own exit-node role
  7. the DNS names follow the map (dns/server.py): a renamed peer answers to its new name
A peer's relay in the netmap is a fallback: we dial the peer directly and use the relay while
no direct control link is up (paths/select.py). Counters go to the server every 2 s from the
agent's status document.

The DHT (nodeagent/discovery/service.py, docs/dht.md) adds what the server cannot give while it
is away, through three calls: `add_dht_peer` (a node the netmap does not list, its certificate
verified offline: a known peer at its certificate's overlay address, with no relay),
`set_endpoint` (a newer endpoint for a peer whose own stopped answering) and `drop_revoked`
(revocations from the DHT: like a netmap's, and our own id means we were revoked). The netmap
wins: an applied map's peer that was a DHT peer becomes a netmap peer, a map from the connected
server drops the DHT peers it does not list, and a peer revoked by the DHT is not added back by
a map that still lists it. `on_netmap(map)` is told about every applied map.

When the server closes our link with REVOKED (`on_revoked`), every peer is dropped and a
`revoked` marker is written to the state dir, so a restart does not bring the old netmap's
peers back; the node has no peers until it enrolls again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import AgentConfig, ConfigError, PeerConfig, default_socket, parse_endpoint
from .enroll import write_private_file
from .protocol import netmap as nm
from .protocol.cert import CertFlags
from .protocol.constants import DEFAULT_CONTROL_PORT, DEFAULT_UDP_PORT
from .protocol.disco import CandidateKind
from .protocol.endpoints import BadEndpoint, check_endpoint
from .protocol.policy import Policy
from .protocol.trust import MeshCA
from .routing.exits import ExitChoice
from .routing.plan import (
    AddPeer,
    AddRoute,
    RemovePeer,
    RemoveRoute,
    SetSelf,
    UpdatePeer,
    effective,
    plan,
    routing_table,
)
from .tunnel import tun as tunmod
from .tunnel.mark import mark

if TYPE_CHECKING:
    from .dns.server import DnsService
    from .exitnode import ExitNode
    from .paths.candidates import Candidate
    from .server_link import ServerLink

__all__ = [
    "AGENT_FILE", "REVOKED_FILE", "EnrolledMode", "advertised_endpoints", "enrolled_config",
    "enrolled_interface", "enrolled_settings", "local_address_towards", "netmap_peer_config",
    "usable_endpoint", "with_candidates",
]

log = logging.getLogger(__name__)

AGENT_FILE = "agent.json"  # {"control_port", "udp_port", "listen_ip", "endpoint", "advertise_exit_node"}
REVOKED_FILE = "revoked"  # marker in the state dir once the server revoked us
MAX_REPORTED_ENDPOINTS = 16  # the endpoints message carries at most this many


# --- the node's settings from the state directory ----------------------------------------------
def enrolled_interface(state_dir: Path) -> str:
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()
    return "sm" + digest[:8]


def enrolled_settings(state_dir: Path) -> dict[str, Any]:
    """The local settings `enroll` kept (agent.json); defaults when absent."""
    path = Path(state_dir) / AGENT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as exc:
        raise ConfigError(path, None, None, f"unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, None, "must be a JSON object")
    # values from the JSON file, each checked below
    out: dict[str, Any] = {"control_port": DEFAULT_CONTROL_PORT, "udp_port": DEFAULT_UDP_PORT,
                           "listen_ip": "0.0.0.0", "endpoint": None,  # noqa: S104
                           "advertise_exit_node": False}
    for key, value in data.items():
        if key not in out:
            raise ConfigError(path, None, key, "unknown key")
        if key.endswith("_port") and (type(value) is not int or not 1 <= value <= 65535):
            raise ConfigError(path, None, key, f"{value!r} is not a port")
        if key == "advertise_exit_node" and type(value) is not bool:
            raise ConfigError(path, None, key, f"{value!r} is not true or false")
        out[key] = value
    try:
        out["listen_ip"] = ipaddress.ip_address(out["listen_ip"])
    except ValueError:
        raise ConfigError(path, None, "listen_ip", f"{out['listen_ip']!r} is not an IP address") from None
    return out


def enrolled_config(state, cert, settings: dict[str, Any]) -> AgentConfig:
    """AgentConfig for `up --state-dir`: overlay address from the certificate, no peers yet."""
    interface = enrolled_interface(state.state_dir)
    return AgentConfig(
        path=state.state_dir, name=state.name, private_key_path=state.state_dir / "node.key",
        overlay=ipaddress.ip_interface(f"{cert.overlay_ip}/{cert.prefix_len}"),
        listen_ip=settings["listen_ip"], control_port=settings["control_port"],
        udp_port=settings["udp_port"], public=bool(cert.flags & (CertFlags.PUBLIC | CertFlags.RELAY)),
        interface=interface, mtu=None, control_socket=default_socket(interface))


def advertised_endpoints(settings: dict[str, Any], config: AgentConfig,
                         server: str, *, warn: bool = True) -> tuple[nm.Endpoint, ...]:
    """The endpoint we report to the server for peers to dial: the `--endpoint` given at
    enrollment, else the address we listen on, else the source address towards the server.
    Only an address peers may be sent to (protocol/endpoints.py) is advertised: none at all
    rather than a loopback or link-local one (loopback only when we listen on loopback).
    `warn=False` for the DHT's periodic check (the start-up call already said it)."""
    host = None
    if settings["endpoint"]:
        try:
            host = parse_endpoint(settings["endpoint"])[0]
        except ValueError:
            host = None
    if host is None and not config.listen_ip.is_unspecified:
        host = str(config.listen_ip)
    if host is None:
        host = local_address_towards(server)
    if host is None:
        return ()
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host) in config.overlay.network:
            # an address of the mesh itself is reachable only through the tunnel it would set up
            if warn:
                log.warning("not advertising %s: it is inside the overlay %s (enroll with --endpoint "
                            "IP:PORT to name an underlay address)", host, config.overlay.network)
            return ()
    try:
        check_endpoint(host, config.control_port, config.udp_port,
                       allow_loopback=config.listen_ip.is_loopback)
    except BadEndpoint as exc:
        if warn:
            log.warning("not advertising an endpoint: %s (enroll with --endpoint IP:PORT to name one)", exc)
        return ()
    return (nm.Endpoint(host, config.control_port, config.udp_port),)


def with_candidates(base: tuple[nm.Endpoint, ...], ours: Iterable[Candidate]) -> tuple[nm.Endpoint, ...]:
    """Our advertised endpoints, then our UDP candidates (traversal.py `ours`: "local" and
    "reflexive", at the advertised control port), at most MAX_REPORTED_ENDPOINTS: what the server
    lists in our peers' netmaps and what our DHT record carries. No advertised endpoint: nothing."""
    if not base:
        return ()
    first = base[0]
    extra = [nm.Endpoint(c.ip, first.control_port, c.port,
                         "local" if c.kind is CandidateKind.LOCAL else "reflexive")
             for c in ours if (c.ip, c.port) != (first.ip, first.udp_port)]
    return (*base, *extra)[:MAX_REPORTED_ENDPOINTS]


def local_address_towards(server: str) -> str | None:
    """The source address the kernel would use to reach the server (no packet is sent), from a
    socket with the underlay mark as the agent's own sockets have (tunnel/mark.py): while an exit
    node carries the node's unmarked traffic, an unmarked probe would be routed into the tunnel
    and name our overlay address."""
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_UDP)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            mark(s)
            s.connect(addr)
            return s.getsockname()[0]
    except (OSError, IndexError, TypeError):
        return None


def usable_endpoint(peer, *, allow_loopback: bool = False) -> tuple[str, int] | None:
    """The first of a netmap peer's endpoints we may dial (protocol/endpoints.py: no loopback
    unless `allow_loopback`, unspecified, link-local, multicast or broadcast address, ports
    1..65535), as (ip, control port); None if it has none."""
    for e in peer.endpoints:
        try:
            check_endpoint(e.ip, e.control_port, e.udp_port, allow_loopback=allow_loopback)
        except BadEndpoint as exc:
            log.warning("peer %s: endpoint %s:%s ignored: %s", peer.name, e.ip, e.control_port, exc)
            continue
        return (e.ip, e.control_port)
    return None


def netmap_peer_config(peer, routes, *, allow_loopback: bool = False,
                       exit_route: nm.Route | None = None) -> PeerConfig:
    """A netmap peer (nodeagent.protocol.netmap.Peer) as the tunnel's PeerConfig.

    In enrolled mode the public key arrives in the peer's certificate during the handshake, so
    `public_key` is empty here; `endpoint` is the first one we may dial (`usable_endpoint`);
    `via` is the server's fallback relay (used while no direct control link is up);
    `allowed_ips` are the netmap routes through this peer: an exit node's default route only when
    it is the exit node in use (`exit_route`)."""
    endpoint = usable_endpoint(peer, allow_loopback=allow_loopback)
    nets = tuple(sorted((ipaddress.ip_network(r.prefix) for r in routes if r.via == peer.peer_id
                         and (not nm.is_exit_route(r) or r == exit_route)),
                        key=lambda n: (n.version, n)))
    candidates = tuple((e.source, e.ip, e.udp_port) for e in peer.endpoints)
    return PeerConfig(public_key=b"", peer_id=peer.peer_id, overlay_ip=ipaddress.ip_address(peer.overlay_ip),
                      name=peer.name, endpoint=endpoint, via=peer.relay, allowed_ips=nets,
                      candidates=candidates)


# --- the live part -----------------------------------------------------------------------------
class EnrolledMode:
    """Applies netmaps to the peer set, keeps the kernel routes, handles our own revocation."""

    def __init__(self, peer_id: str, trust: MeshCA, peers, *, set_hub_role: Callable[[bool], None],
                 interface: str, overlay, set_policy: Callable[[Policy], None] = lambda policy: None) -> None:
        """`peer_id`: ours; `trust`: the mesh CA the handshakes check against; `peers`: the
        PeerSet; `set_hub_role(on)`: whether we relay for others (the netmap's word on it);
        `set_policy(policy)`: the access policy the data path enforces (the netmap's);
        `interface`, `overlay`: the TUN device and its address with prefix."""
        self.peer_id = peer_id
        self.trust = trust
        self.peers = peers
        self.set_hub_role = set_hub_role
        self.set_policy = set_policy
        self.interface = interface
        self.overlay = overlay
        self.allow_loopback = False  # dial peers' loopback endpoints (set when we listen on loopback)
        self.applied: nm.NetMap | None = None
        self.kernel_routes: set = set()  # prefixes we added to the TUN beyond the overlay network
        self.server_link: ServerLink | None = None  # set by start-up (none in tests)
        self.base_endpoints: tuple[nm.Endpoint, ...] = ()  # what start-up reports (advertised_endpoints)
        self.exit: ExitNode | None = None  # set by start-up (none in tests)
        self.dns: DnsService | None = None  # set by start-up (none in tests)
        self.exit_route: nm.Route | None = None  # the default route of the exit node in use
        self.candidates: tuple[Candidate, ...] = ()  # our UDP candidates (traversal.py), the latest
        self.state_dir: Path | None = None  # where the "revoked" marker goes
        self.revoked_self = False
        self.dht_peers: set[str] = set()  # peers learned from the DHT, not listed by the applied netmap
        self.dht_endpoints: set[str] = set()  # netmap peers dialed at an endpoint from their DHT record
        self.on_netmap: Callable[[nm.NetMap], None] | None = None  # the DHT: after each applied map

    def use_state_dir(self, state_dir: Path) -> None:
        """Keep the revoked marker in `state_dir`; if it is there already, we stay revoked."""
        self.state_dir = state_dir
        if (state_dir / REVOKED_FILE).exists():
            self.revoked_self = True
            log.error("this node was revoked (%s); it has no peers until it enrolls again",
                      state_dir / REVOKED_FILE)

    async def run(self) -> None:
        """Run the server link until it ends; a REVOKED close makes us drop every peer."""
        link = self.server_link
        if link is None:
            return
        try:
            await link.run()
        except Exception:
            log.exception("server link failed")
            return
        if link.revoked:
            self.on_revoked()

    async def apply_netmap(self, netmap: nm.NetMap) -> None:
        """Take the agent from the applied netmap to `netmap` without a restart (routing.plan).
        Everything but the kernel routes changes at once, on the loop thread; the routes follow
        (netlink, in a worker thread: pyroute2 runs its own event loop)."""
        if netmap.node.peer_id != self.peer_id:
            log.error("netmap %d is for %s, not for us; ignored", netmap.serial, netmap.node.peer_id)
            return
        if self.revoked_self:
            return
        revoked = {r.peer_id for r in netmap.revoked}
        for pid in revoked:  # first: no handshake of a revoked peer may complete from now on
            self.trust.revoke(pid)
        peers, _routes = effective(netmap)
        self._merge_dht_peers(peers)
        self.trust.known = set(peers) | self.dht_peers
        choice = self.exit.choose(netmap) if self.exit is not None else ExitChoice()
        exit_route = nm.Route(choice.prefix, choice.peer_id) if choice.peer_id and choice.prefix else None
        route_changes = exit_route != self.exit_route
        self.exit_route = exit_route
        actions = plan(self.applied, netmap)
        for action in actions:
            match action:
                case SetSelf(node=node):
                    self.set_hub_role(node.is_public or node.is_relay)
                    if node.overlay_ip != str(self.overlay.ip):
                        log.error("the server moved this node to %s; restart the agent to re-address",
                                  node.overlay_ip)
                case RemovePeer(peer_id=pid, revoked=was_revoked):
                    self.peers.remove(pid, revoked=was_revoked)
                case AddPeer(peer=p) | UpdatePeer(new=p) if p.peer_id in self.trust.revoked:
                    pass  # revoked through the DHT: a map that still lists it does not bring it back
                case AddPeer(peer=p) if p.peer_id in self.peers.by_id:
                    self.peers.update(self._peer_config(p, netmap))  # a DHT peer, now the netmap's
                case AddPeer(peer=p):
                    self.peers.add(self._peer_config(p, netmap))
                case UpdatePeer(new=p, reset_sessions=reset):
                    self.peers.update(self._peer_config(p, netmap), reset)
                case RemoveRoute() | AddRoute():
                    route_changes = True
        # routes changed: the peers they go through get new allowed prefixes
        if route_changes:
            for pid, peer in self.peers.by_id.items():
                nm_peer = netmap.peer(pid)
                if nm_peer is not None:
                    pc = self._peer_config(nm_peer, netmap)
                    if pc != peer.config:
                        peer.config = pc
        self._restore_netmap_endpoints(netmap)
        self.applied = netmap
        # DHT peers are not in the map's table: then the table is built from the peer set (the same
        # entries for the map's peers: each one's overlay address and the routes through it)
        self.peers.rebuild_table(None if self.dht_peers else routing_table(netmap, exit_route))
        self.set_policy(netmap.policy)
        await self._sync_kernel_routes()
        if self.exit is not None:
            await self.exit.apply(netmap)
        if self.dns is not None:
            self.dns.update(netmap)
        log.info("netmap %d applied: %d peers, %d routes, %d revoked, policy %s with %d rules (%d actions)",
                 netmap.serial, len(self.peers), len(netmap.routes), len(revoked), netmap.policy.default,
                 len(netmap.policy.rules), len(actions),
                 extra={"event": "netmap.applied", "serial": netmap.serial})
        if self.on_netmap is not None:
            self.on_netmap(netmap)

    def _merge_dht_peers(self, listed: dict) -> None:
        """A map arrived: DHT peers it lists become its peers; from the connected server, it is the
        whole membership, so the DHT peers it does not list are dropped (the netmap wins)."""
        self.dht_peers -= set(listed)
        if self.dht_peers and self.server_connected():
            for pid in sorted(self.dht_peers):
                log.info("peer %s learned from the DHT is not in the server's netmap: dropped", pid[:8])
                self.peers.remove(pid)
            self.dht_peers = set()

    def _restore_netmap_endpoints(self, netmap: nm.NetMap) -> None:
        """A map from the connected server: the peers we dialed at an endpoint from their DHT record
        (while the server was away) take the map's endpoint and candidates again, even when the
        map did not change them (the netmap wins)."""
        if not self.dht_endpoints or not self.server_connected():
            return
        for pid in sorted(self.dht_endpoints):
            peer, listed = self.peers.get(pid), netmap.peer(pid)
            if peer is not None and listed is not None and pid not in self.trust.revoked:
                pc = self._peer_config(listed, netmap)
                if pc != peer.config:
                    log.info("peer %s: the server's netmap endpoint %s again (not its DHT record's)",
                             pid[:8], pc.endpoint)
                    self.peers.update(pc)
        self.dht_endpoints = set()

    # --- what the DHT adds (nodeagent/discovery/service.py) ---------------------------------------
    def server_connected(self) -> bool:
        link = self.server_link
        return link is not None and link.connected.is_set()

    def add_dht_peer(self, pc: PeerConfig) -> None:
        """A node the netmap does not list, its record and certificate verified offline: a known
        peer from now on (MeshCA.known), at its certificate's overlay address."""
        pid = pc.peer_id
        if self.revoked_self or pid in self.peers.by_id or pid in self.trust.revoked:
            return
        self.dht_peers.add(pid)
        self.trust.known = set(self.trust.known or ()) | {pid}  # replaced whole: worker threads read it
        self.peers.add(pc)

    def set_endpoint(self, peer_id: str, endpoint: tuple[str, int] | None,
                     candidates: tuple[tuple[str, str, int], ...] | None = None) -> None:
        """Dial `peer_id` at `endpoint` from now on (its dialer restarts); `candidates`: its UDP
        candidates from now on (traversal.py punches to them), None: unchanged."""
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        pc = replace(peer.config, endpoint=endpoint,
                     candidates=peer.config.candidates if candidates is None else candidates)
        if pc != peer.config:
            if peer_id not in self.dht_peers:
                self.dht_endpoints.add(peer_id)  # the server's next map puts the netmap's back
            self.peers.update(pc)

    def drop_revoked(self, peer_ids: set[str]) -> None:
        """Revocations learned from the DHT: as a netmap's (no handshake completes, the link is
        closed with REVOKED, the keys wiped). Our own id among them: we were revoked."""
        if self.peer_id in peer_ids:
            self.on_revoked("revoked by the network's CA (its revocation list, from the DHT)")
        for pid in sorted(peer_ids - {self.peer_id}):
            self.trust.revoke(pid)
            self.dht_peers.discard(pid)
            if pid in self.peers.by_id:
                self.peers.remove(pid, revoked=True)

    def _peer_config(self, peer: nm.Peer, netmap: nm.NetMap) -> PeerConfig:
        return netmap_peer_config(peer, netmap.routes, allow_loopback=self.allow_loopback,
                                  exit_route=self.exit_route)

    async def _sync_kernel_routes(self) -> None:
        # a default route is the exit node's, routed by policy (exitnode.py), never on the TUN here
        wanted = {n for p in self.peers for n in p.config.allowed_ips if n.prefixlen > 0}
        add, remove = wanted - self.kernel_routes, self.kernel_routes - wanted
        if not add and not remove:
            return
        try:
            await asyncio.to_thread(tunmod.set_routes, self.interface, self.overlay,
                                    add=sorted(add, key=str), remove=sorted(remove, key=str))
            self.kernel_routes = wanted
        except tunmod.TunError as exc:
            log.error("kernel routes: %s", exc)

    def close(self) -> None:
        """The agent stopped (sync, after its event loop): exit-node routing and role undone."""
        if self.exit is not None:
            self.exit.close()

    def on_revoked(self, why: str = "revoked by the server") -> None:
        """The server closed our link with REVOKED (or the CA's list names us): we are no member any
        more; drop every peer and remember it (state dir), so a restart does not bring the old
        netmap's peers back."""
        self.revoked_self = True
        self.dht_peers = set()
        self.dht_endpoints = set()
        for pid in list(self.peers.by_id):
            self.peers.remove(pid)
        if self.state_dir is not None:
            with contextlib.suppress(OSError):
                write_private_file(self.state_dir / REVOKED_FILE, why.encode() + b"\n")
        log.error("this node was %s; all peers dropped (enroll again to rejoin)", why,
                  extra={"event": "node.revoked"})

    def relay_ids(self) -> tuple[str, ...]:
        """The network's relay-capable nodes (the hubs), from the applied netmap."""
        return () if self.applied is None else self.applied.relays

    def report_candidates(self, ours: Iterable[Candidate]) -> None:
        """Our UDP candidates changed (traversal.py): report them with the advertised endpoint, so
        the server lists them in our peers' netmaps ("local" and "reflexive" endpoints)."""
        self.candidates = tuple(ours)
        self._report_endpoints()

    def set_base_endpoints(self, base: tuple[nm.Endpoint, ...]) -> None:
        """Our advertised endpoints changed (the DHT computes them again: the node moved): report
        them, with our UDP candidates, from now on."""
        if base != self.base_endpoints:
            self.base_endpoints = base
            self._report_endpoints()

    def reported_endpoints(self) -> tuple[nm.Endpoint, ...]:
        """What we report to the server and publish in our DHT record (`with_candidates`)."""
        return with_candidates(self.base_endpoints, self.candidates)

    def _report_endpoints(self) -> None:
        if self.base_endpoints and self.server_link is not None:
            self.server_link.update_endpoints(self.reported_endpoints())

    def status_fields(self) -> dict:
        """What enrolled mode adds to the status document's "node"."""
        link = self.server_link
        return {
            "mode": "enrolled",
            "serial": None if self.applied is None else self.applied.serial,
            "server": "revoked" if self.revoked_self else (
                "connected" if link is not None and link.connected.is_set() else "disconnected"),
            "revoked_peers": sorted(self.trust.revoked),
            # seconds between the counter reports we send now: our own, or what the server asked
            "stats_interval_s": None if link is None else link.report_interval,
            "exit_node": None if self.exit is None else self.exit.status(),
            "dns": None if self.dns is None else self.dns.status(),
        }
