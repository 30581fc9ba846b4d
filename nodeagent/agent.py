"""The agent: wires the collaborators below and owns the event loop. The map of who owns what:

    startup.py              start-up of both modes: ports, TUN, exit codes (`run_agent`, `run_enrolled`)
    tunnel/datapath.py      both packet pipelines (TUN <-> UDP), keys in use, counters
    tunnel/relay.py         relay envelopes: a hub forwarding other peers' frames, those from our hub
    peers.py                the peer set: the list the data path reads, the indexes, the routing table
    paths/select.py         the path to each peer: direct, or through its relay hub
    traversal.py            NAT traversal (enrolled mode): candidates, hole punching, the data path
                            of a relayed peer (direct when punched, else the cheapest relay)
    pathmtu.py              how big a packet each direct path carries, probed (a path that drops
                            big packets without an ICMP); the data path answers bigger ones
    control/links.py        control links: dialers, link election, link keepalives, message dispatch
    control/server.py       the control port (the unauthenticated door): per-source limits, first handshake
    control/handshakes.py   data-key handshakes: admission, both roles, relayed handshakes, keys installed
    control/crypto.py       the two worker threads where handshake cryptography runs
    sessions.py             per-peer session timers (protocol/session.py): retries, rekeys, keepalives
    enrolled.py             enrolled mode: netmaps applied, kernel routes, revocation, the server link
    exitnode.py             enrolled mode: using an exit node (policy routing), being one (nftables)
    dns/server.py           enrolled mode: the mesh's names answered on the overlay address
    policy/filter.py        the access policy the data path enforces (`set_policy` swaps it whole)
    discovery/service.py    enrolled mode's DHT: records published and looked up, DHT peers, the CA's
                            revocation list spread while the server is away (docs/dht.md)
    status.py               the `status --json` document and the counter report (one builder)
    control/local.py        the local status socket
    metrics/                `up --metrics-listen`: Prometheus text from `status()` (startup.py serves it)

Two modes share all of it: serverless (`up --config`: peers pinned in a TOML file, fixed for the
agent's life) and enrolled (`up --state-dir`: peers come from the netmap the server pushes,
enrolled.py). They differ in three places, each decided once here: the trust (pinned keys, or
the mesh CA and our certificate), a peer's relay (the path, or a fallback), and the enrolled
collaborator.

Inside the loop, one thread does everything but the handshake cryptography:
  - the data path: `loop.add_reader` drain callbacks on the TUN fd and the UDP socket; no
    per-datagram asyncio machinery; the loop is uvloop's when it is installed (evloop.py);
  - control: the listener and one dialer task per peer (control/links.py); data-key rekeys run
    inside the open link (control/handshakes.py); their ML-KEM / ML-DSA work goes to two worker
    threads (control/crypto.py), so a burst of handshakes does not stall forwarding;
  - a TICK_S housekeeping tick (`tick`): session timers and RTT probes, the data path's index
    sweep (keys that expired or were rotated out), stalled responders cut, control-link keepalives,
    path MTU probes;
  - the traversal's own timer loop (finer while a hole punch is in flight, traversal.py);
  - the local status socket; in enrolled mode the server link and the DHT (which shares the
    control port: the listener hands it the connections that start with a DHT frame).
The collaborators never hold the agent: each gets what it reads as constructor arguments and
what it must cause elsewhere as narrow callbacks; the per-peer state of each is kept in step
through the peer set's listener calls (peers.py). Where two need each other (handshakes ->
links, handshakes -> sessions, the data path -> sessions, paths -> links, traversal -> paths,
traversal -> enrolled), the callback made
before its target exists is a lambda that looks the target up when it is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable

from .config import AgentConfig
from .control.crypto import CryptoWorkers
from .control.handshakes import Handshakes
from .control.links import Links
from .control.local import LocalSocketError, serve_status
from .enrolled import EnrolledMode
from .identity import NodeIdentity
from .pathmtu import PathMtuProbes
from .paths.candidates import Candidate
from .paths.select import PathSelector
from .peers import PeerSet
from .policy.filter import PacketFilter
from .policy.index import RuleIndex
from .protocol.frames import FrameType
from .protocol.messages import Stats
from .protocol.policy import Policy
from .protocol.trust import LocalIdentity, MeshCA, PinnedKeys
from .sessions import Sessions, random_jitter, session_timing
from .status import node_status, peer_status, stats_report, status_document
from .traversal import Traversal
from .tunnel import tun as tunmod
from .tunnel.datapath import DataPath, Peer
from .tunnel.udp import UdpSocket

__all__ = ["Agent", "AgentStartError"]

log = logging.getLogger("nodeagent")

TICK_S = 0.25
_ACK = int(FrameType.PROBE_ACK)


class AgentStartError(Exception):
    """A start-up failure: the message for the user and the process exit code (cli.py)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Agent:
    def __init__(self, config: AgentConfig, identity: NodeIdentity, tun: tunmod.TunDevice, udp: UdpSocket,
                 control_sock: socket.socket, mtu: int, *, certificate: bytes | None = None,
                 ca_public_key: bytes | None = None, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random_jitter) -> None:
        """`certificate` (with the CA's `ca_public_key`) makes this an enrolled agent. `clock`
        (monotonic seconds) drives the data path and the sessions; `jitter` draws the extra delay
        of each handshake retry (tests pass fixed ones)."""
        self.config = config
        self.tun = tun
        self.udp = udp
        self.control_sock = control_sock
        self.mtu = mtu
        self.clock = clock
        self.started = clock()
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.running = False
        # the mode: trust, and whether a peer's `via` is its path or a fallback
        enrolled = certificate is not None
        trust: PinnedKeys | MeshCA
        if certificate is None:
            local = LocalIdentity.pinned(identity.private_key)
            trust = PinnedKeys({p.peer_id: p.public_key for p in config.peers})
        else:
            if ca_public_key is None:
                raise ValueError("an enrolled agent needs the CA's public key with its certificate")
            local = LocalIdentity(identity.private_key, certificate)
            # a peer's certificate must name the overlay address the applied netmap gives it
            trust = MeshCA(ca_public_key, known_peer_ids=(), overlay_of=self._netmap_overlay)
        limits, rekey_timeout = session_timing(config.rekey_after_s)

        self.datapath = DataPath(tun.fd, udp, [], is_hub=config.public,
                                 on_handshake_needed=lambda peer: self.sessions.need_keys(peer),
                                 clock=clock, vnet=tun.vnet)
        self.peers = PeerSet(self.datapath, config.relay_rate_pps)
        self.workers = CryptoWorkers()
        self.handshakes = Handshakes(
            local, trust, datapath=self.datapath, peers=self.peers, limits=limits, clock=clock,
            is_hub=lambda: self.datapath.is_hub, via_is_fallback=enrolled,
            link_to=lambda pid: self.links.get(pid),
            on_keys_installed=lambda peer, now: self.sessions.keys_installed(peer, now),
            on_handshake_failed=lambda peer: self.sessions.handshake_failed(peer),
            spawn=self._spawn, workers=self.workers)
        self.sessions: Sessions = Sessions(
            self.peers, self.datapath, limits=limits, keepalive_s=config.keepalive_s,
            rekey_timeout_s=rekey_timeout, jitter=jitter, clock=clock,
            request_handshake=self.handshakes.request_handshake,
            forget_handshake=self.handshakes.forget_initiator)
        self.traversal = Traversal(
            local.peer_id, self.peers, self.datapath, udp_port=udp.port, mtu=mtu, clock=clock,
            resolve=lambda peer: self.paths.resolve(peer), enabled=enrolled,
            hub_ids=lambda: () if self.enrolled is None else self.enrolled.relay_ids(),
            interface_addresses=tunmod.interface_addresses, skip_interfaces=(tun.name,),
            skip_networks=lambda: [config.overlay.network,
                                   *(n for p in self.peers for n in p.config.allowed_ips)],
            on_candidates=self._report_candidates,
            spawn=self._spawn)
        self.path_mtus = PathMtuProbes(self.peers, self.datapath, udp, mtu=mtu, clock=clock,
                                       relays=self._relays)
        self.datapath.on_disco = self._on_disco
        self.paths = PathSelector(
            self.peers, via_is_fallback=enrolled, direct_link_up=lambda pid: self.links.is_up(pid),
            flush_pending=self.datapath.flush_pending, announce=lambda: self.running,
            data_path=self.traversal.data_path if enrolled else None, on_change=self.traversal.path_changed)
        self.links: Links = Links(
            local.peer_id, self.peers, self.handshakes, listen_ip=config.listen_ip, udp_port=udp.port,
            keepalive_s=config.keepalive_s, dial_relayed=enrolled, flush_pending=self.datapath.flush_pending,
            on_path_change=self.paths.resolve, on_hub_up=self.sessions.hub_up, spawn=self._spawn,
            is_running=lambda: self.running)
        self.enrolled: EnrolledMode | None = None
        self.discovery = None  # discovery.service.Discovery, enrolled mode only (attach_discovery)
        if isinstance(trust, MeshCA):  # enrolled
            self.enrolled = EnrolledMode(local.peer_id, trust, self.peers, set_hub_role=self._set_hub_role,
                                         set_policy=self.set_policy, interface=tun.name,
                                         overlay=config.overlay)
            self.enrolled.allow_loopback = config.listen_ip.is_loopback
        # the handshake driver first: a revoked peer is revoked before its link is closed
        self.peers.listeners.extend([self.handshakes, self.sessions, self.links, self.traversal, self.paths,
                                     self.path_mtus])
        for pc in config.peers:
            self.peers.add(pc)
        self.set_policy(config.policy)  # serverless: the [policy] table; enrolled: each netmap's

    def set_policy(self, policy: Policy) -> None:
        """Enforce `policy` from the next packet on: the data path's filter is replaced whole (a
        filter that allows everything is none at all); the flows this node started and may still
        start are kept (policy/filter.py)."""
        dp = self.datapath
        if not policy.filters:
            if dp.filter is not None:
                log.info("access policy: every packet allowed in")
            dp.filter = None
        elif dp.filter is None or dp.filter.policy != policy:
            dp.filter = PacketFilter(policy, self.clock(), previous=dp.filter)
            log.info("access policy: %d rules, everything else refused", len(policy.rules))

    def policy_rules(self) -> RuleIndex | None:
        """The access policy's rules the data path enforces now, compiled; None when it filters
        nothing (the DHT asks: a node the netmap does not list is a peer only if they let it be)."""
        f = self.datapath.filter
        return None if f is None else f.index

    def attach_discovery(self, discovery) -> None:
        """Enrolled mode's DHT (discovery/service.py): the control port hands it DHT streams; a
        HELLO from an unknown peer id and a packet no peer routes start its lookups; every applied
        netmap feeds it."""
        assert self.enrolled is not None  # the DHT runs in enrolled mode only
        self.discovery = discovery
        self.links.server.dht_serve = discovery.node.serve
        self.links.server.on_unknown_peer = discovery.unknown_peer
        self.datapath.on_no_route = discovery.no_route
        self.enrolled.on_netmap = discovery.netmap_applied

    def _on_disco(self, peer: Peer, ftype: int, payload: bytes, addr, hub: Peer | None, now: float) -> None:
        """An authenticated PROBE, PROBE_ACK or CALL: the answers to our path MTU probes go to
        pathmtu.py, everything else to the traversal."""
        if ftype == _ACK and self.path_mtus.owns(payload):
            self.path_mtus.on_ack(peer, payload, hub, now)
        else:
            self.traversal.on_disco(peer, ftype, payload, addr, hub, now)

    def _relays(self) -> set[str] | None:
        """The peers whose path carries relayed frames: None (every peer) while we are a hub (we
        forward relayed frames to them), else the netmap's relays and the `via` of configured
        peers."""
        if self.datapath.is_hub:
            return None
        out = {p.config.via for p in self.peers if p.config.via is not None}
        if self.enrolled is not None:
            out.update(self.enrolled.relay_ids())
        return out

    def _set_hub_role(self, on: bool) -> None:
        self.datapath.is_hub = on

    def _report_candidates(self, ours: list[Candidate]) -> None:
        if self.enrolled is not None:
            self.enrolled.report_candidates(ours)
        if self.discovery is not None:  # our DHT record carries them too
            self.discovery.candidates_changed()

    def _netmap_overlay(self, peer_id: str):
        """The overlay address the applied netmap gives a peer (enrolled.py copies it into the
        peer's config); None if it is not in it. Called from handshake worker threads."""
        peer = self.peers.get(peer_id)
        return None if peer is None else peer.config.overlay_ip

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_reader(self.tun.fd, self.datapath.tun_ready)
        loop.add_reader(self.udp.fileno(), self.datapath.udp_ready)
        status_server = None
        try:
            try:
                status_server = await serve_status(self.config.control_socket, self.status)
            except (LocalSocketError, OSError) as exc:
                raise AgentStartError(f"status socket: {exc}") from None
            await self.links.listen(self.control_sock)
            self.running = True
            self.links.start_dialers()
            self._spawn(self._housekeeping())
            self._spawn(self.traversal.run())
            if self.enrolled is not None:
                if self.enrolled.dns is not None:
                    self._spawn(self.enrolled.dns.run())  # mesh names on the overlay address
                self._spawn(self.enrolled.run())
            if self.discovery is not None:
                self._spawn(self.discovery.run())
            log.info("agent %s (%s) up: %s on %s mtu %d, udp %d (gso %s, gro %s, rcvbuf %d), control %d, "
                     "%d peers", self.config.name, self.handshakes.local.peer_id, self.config.overlay,
                     self.tun.name, self.mtu, self.udp.port, self.udp.gso, self.udp.gro, self.udp.rcvbuf,
                     self.config.control_port, len(self.peers),
                     extra={"event": "agent.up"})
            await self.stop.wait()
            log.info("stopping", extra={"event": "agent.stopping"})
        finally:
            self.running = False
            loop.remove_reader(self.tun.fd)
            loop.remove_reader(self.udp.fileno())
            self.datapath.close()
            self.links.close_all()
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.discovery is not None:
                await self.discovery.close()
            if status_server is not None:
                status_server.close()
                with contextlib.suppress(OSError):
                    self.config.control_socket.unlink()
            self.workers.close()
            for p in self.peers:
                p.ring.wipe_all()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- housekeeping -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick(self.clock())

    def tick(self, now: float) -> None:
        """One housekeeping round (every TICK_S): the session timers and RTT probes, then the index
        sweep (keys that expired or were rotated out), idle flows of the access policy, stalled
        responders, control-link keepalives, narrow paths the kernel has forgotten by now, the
        path MTU probes."""
        self.sessions.tick(now)
        self.datapath.sweep()
        self.udp.expire_narrow(now)
        if self.datapath.filter is not None:
            self.datapath.filter.tick(now)
        self.handshakes.cut_stalled(now)
        self.links.keepalives(now)
        self.path_mtus.tick(now)

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        now = self.clock()
        node = node_status(peer_id=self.handshakes.local.peer_id, name=self.config.name,
                           overlay_ip=str(self.config.overlay.ip), uptime_s=now - self.started,
                           datapath=self.datapath, relayed_handshakes=self.handshakes.relayed,
                           interface=self.tun.name, mtu=self.mtu, udp=self.udp)
        node["handshake"] = {**self.handshakes.status(), "door": self.links.server.status()}
        if self.enrolled is not None:
            node.update(self.enrolled.status_fields())
            node["dht"] = None if self.discovery is None else self.discovery.status()
        node.update(self.traversal.node_fields())
        peers = [{**peer_status(p, control_up=self.links.is_up(p.config.peer_id), now=now),
                  **self.traversal.peer_fields(p, now), **self.path_mtus.peer_fields(p, now)}
                 for p in self.peers]
        return status_document(node, peers)

    def stats_report(self) -> Stats:
        """The counter report the server link sends up (the counters of `status()`'s peers)."""
        now = self.clock()
        return stats_report(now - self.started, self.peers, now=now,
                            dht=None if self.discovery is None else self.discovery.counters())
