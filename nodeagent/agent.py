"""The agent supervisor: owns the event loop, the TUN, the sockets and the peers.

Two modes share everything below: serverless (`up --config`: peers pinned in a TOML file, fixed
for the agent's life) and enrolled (`up --state-dir`: peers come from the netmap the server
pushes, see "Enrolled mode" at the end of this docstring).

Start-up (`run_agent`), in this order so each failure has one clear message and exit code:
  1. bind the UDP data port and the TCP control port     (port in use -> exit 5)
  2. create the TUN device, address, MTU, routes         (not permitted -> exit 4)
  3. run the event loop until SIGINT/SIGTERM; then close links (CLOSE/SHUTDOWN), remove the
     routes and the device, unlink the status socket.

Inside the loop, one thread does everything:
  - the data path: `loop.add_reader` drain callbacks on the TUN fd and the UDP socket
    (tunnel/datapath.py); no per-datagram asyncio machinery;
  - control: a listener (control/server.py) and one dialer task per peer that has an endpoint
    (control/client.py). A pair of peers keeps one link; when both dial at once, the link dialed
    by the lower peer id wins on both sides, and a redial by the same side replaces the old link
    (a restarted peer). Data-key rekeys run inside the open link (sealed HANDSHAKE messages),
    or for relayed peers as RELAY_HANDSHAKE through the hub's link, which forwards them unread;
  - one PeerSession per peer (protocol/session.py) holds the timer POLICY: handshake retry
    every REKEY_TIMEOUT plus a random jitter, give-up after 90 s, initiator rekey at 120 s,
    keepalive after `keepalive_s` without sending, new handshake after 15 s without a reply,
    key expiry at 180 s. The agent only feeds it facts and carries out its events (_act):
        facts in                                   events out -> I/O here
        datapath needs keys (on_handshake_needed)   StartHandshake   -> request_handshake (HELLO)
        keys installed (_install)                   HandshakeTimedOut -> forget the Initiator
        HELLO could not leave / CHALLENGE refused    HandshakeGaveUp  -> drop the queued packets
        a path came up (hub link)                   SendKeepalive    -> datapath echo keepalive
        traffic stamps peer.last_tx / last_rx       KeysExpired      -> datapath.sweep (indices)
    The session shares the peer's KeyRing with the data path, which installs and rotates keys.
  - a 0.25 s housekeeping tick: hands each session the data path's traffic stamps, asks it
    `handle_timer(now)`, acts on the events; cuts off stalled responders; control-link
    keepalives every `keepalive_s`;
  - the local status socket (control/local.py).

Enrolled mode (`run_enrolled`): the TUN gets the certificate's overlay address; handshakes
present the certificate and check peers against the mesh CA (protocol.trust.MeshCA, which
also holds the revocation list). A ServerLink (server_link.py) runs beside the tunnel; each
netmap it delivers (the persisted one first, so tunnels come up while the server is down) goes
through `apply_netmap`: routing.plan diffs it against the applied map and the actions change the
peer set live (`add_peer` / `remove_peer` / `update_peer`), the kernel routes (tun.set_routes)
and the data path's table. A revoked peer is added to the CA's revocation list before anything
else, so it cannot handshake again, then its link is closed and its keys wiped. A peer's relay
in the netmap is a fallback: we dial the peer directly and use the relay while no direct control
link is up. Counters go to the server every 2 s from `status()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import random
import secrets
import signal
import socket
import time

from .config import AgentConfig, PeerConfig, netmap_peer_config
from .control.client import dial
from .control.link import HANDSHAKE_DEADLINE_S, Link
from .control.local import LocalSocketError, serve_status
from .control.server import ControlServer
from .identity import NodeIdentity
from .protocol.constants import (
    REJECT_AFTER_TIME_S,
    REKEY_AFTER_TIME_RECEIVING_S,
    REKEY_TIMEOUT_JITTER_MAX_S,
    REKEY_TIMEOUT_S,
)
from .protocol.control import (
    CloseReason,
    Handshake,
    Keepalive,
    RelayHandshake,
    Routes,
    UdpEndpoint,
)
from .protocol.events import (
    HandshakeGaveUp,
    HandshakeReason,
    HandshakeTimedOut,
    KeysExpired,
    SendKeepalive,
    StartHandshake,
)
from .protocol.frames import FRAME_OVERHEAD, RELAY_OVERHEAD
from .protocol.handshake import Initiator, MessageType, Responder, message_type
from .protocol.handshake_errors import HandshakeError
from .protocol.hello_guard import HelloGuard
from .protocol.keys import Limits
from .protocol.session import PeerSession
from .protocol.trust import LocalIdentity, MeshCA, PinnedKeys
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
from .routing.table import RouteConflict, RouteTable
from .stats import status_document
from .tunnel import tun as tunmod
from .tunnel.datapath import DataPath, Peer, TokenBucket
from .tunnel.udp import PortInUse, UdpSocket

__all__ = ["Agent", "AgentStartError", "choose_mtu", "run_agent", "run_enrolled"]

log = logging.getLogger("nodeagent")

TICK_S = 0.25
HANDSHAKE_RATE = 2.0  # responder: handshakes per second and peer, burst below
HANDSHAKE_BURST = 5
REVOKED_FILE = "revoked"  # enrolled mode: marker in the state dir once the server revoked us


class AgentStartError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def choose_mtu(config: AgentConfig) -> int:
    if config.mtu is not None:
        return config.mtu
    family = config.listen_ip.version
    if config.listen_ip.is_unspecified:
        versions = {ipaddress.ip_address(p.endpoint[0]).version for p in config.peers if p.endpoint}
        family = 6 if 6 in versions else 4
    relayed = any(p.via for p in config.peers)
    return tunmod.overlay_mtu(family, RELAY_OVERHEAD if relayed else FRAME_OVERHEAD)


def _random_jitter() -> float:
    return random.uniform(0.0, REKEY_TIMEOUT_JITTER_MAX_S)


class Agent:
    def __init__(self, config: AgentConfig, identity: NodeIdentity, tun: tunmod.TunDevice, udp: UdpSocket,
                 control_sock: socket.socket, mtu: int, *, certificate: bytes | None = None,
                 ca_public_key: bytes | None = None, clock=time.monotonic, jitter=_random_jitter) -> None:
        """`clock` (monotonic seconds) drives the data path and the sessions; `jitter` draws the
        extra delay of each handshake retry (tests pass fixed ones)."""
        self.config = config
        self.identity = identity
        self.tun = tun
        self.udp = udp
        self.control_sock = control_sock
        self.mtu = mtu
        # enrolled mode: certificates checked against the mesh CA; a peer's `via` is a fallback
        self.enrolled = certificate is not None
        if certificate is None:
            self.local = LocalIdentity.pinned(identity.private_key)
            self.trust = PinnedKeys({p.peer_id: p.public_key for p in config.peers})
        else:
            self.local = LocalIdentity(identity.private_key, certificate)
            self.trust = MeshCA(ca_public_key, known_peer_ids=())
        self.public = config.public
        self.guard = HelloGuard()
        self.peers: list[Peer] = []  # shared with the data path (same list object)
        self.by_id: dict[str, Peer] = {}
        rekey = config.rekey_after_s
        self.limits = Limits() if rekey is None else Limits(
            rekey_after_time=rekey, rekey_after_time_receiving=max(rekey, REKEY_AFTER_TIME_RECEIVING_S),
            reject_after_time=REJECT_AFTER_TIME_S)
        # handshake attempts at most once per REKEY_TIMEOUT; a lowered rekey time (tests) lowers it
        # too, or a rekey every 2 s could start only every 5 s
        self.rekey_timeout = REKEY_TIMEOUT_S if rekey is None else min(REKEY_TIMEOUT_S, rekey / 2)
        self.clock = clock
        self.jitter = jitter
        self.sessions: dict[str, PeerSession] = {}  # peer id -> its timer machine
        self.datapath = DataPath(tun.fd, udp, self.peers, is_hub=config.public,
                                 on_handshake_needed=self._on_handshake_needed, clock=clock, vnet=tun.vnet)
        self.links: dict[str, Link] = {}
        self.no_link: dict[str, asyncio.Event] = {}
        self.dialers: dict[str, asyncio.Task] = {}
        self.initiators: dict[str, Initiator] = {}  # our data-key handshake in flight, per peer
        self.responders: dict[str, tuple[Responder, float]] = {}
        self.hs_buckets: dict[str, _HandshakeBucket] = {}
        self.link_keepalive: dict[str, float] = {}  # peer id -> last control-link KEEPALIVE
        self.relayed_handshakes = 0
        self.started = clock()
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.running = False
        self.server = ControlServer(self._make_responder, self.admit, self._incoming,
                                    max_connections=8)
        self.server.open_links = lambda: len(self.links)
        # enrolled mode state
        self.applied = None  # the applied netmap (protocol.netmap.NetMap)
        self.kernel_routes: set = set()  # prefixes we added to the TUN beyond the overlay network
        self.server_link = None
        self.state_dir = None  # enrolled mode: where the "revoked" marker goes
        self.revoked_self = False
        for pc in config.peers:
            self.add_peer(pc, rebuild=False)
        for p in self.peers:
            self._resolve_hub(p)
        self._rebuild_table()

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_reader(self.tun.fd, self.datapath.on_tun)
        loop.add_reader(self.udp.fileno(), self.datapath.on_udp)
        status_server = None
        try:
            try:
                status_server = await serve_status(self.config.control_socket, self.status)
            except (LocalSocketError, OSError) as exc:
                raise AgentStartError(f"status socket: {exc}") from None
            self.server.server = await asyncio.start_server(self.server._accept, sock=self.control_sock)
            self.running = True
            for p in self.peers:
                self._start_dialer(p)
            self._spawn(self._housekeeping())
            if self.server_link is not None:
                self._spawn(self._run_server_link())
            log.info("agent %s (%s) up: %s on %s mtu %d, udp %d (gso %s, gro %s, rcvbuf %d), control %d, "
                     "%d peers", self.config.name, self.local.peer_id, self.config.overlay, self.tun.name,
                     self.mtu, self.udp.port, self.udp.gso, self.udp.gro, self.udp.rcvbuf,
                     self.config.control_port, len(self.peers))
            await self.stop.wait()
            log.info("stopping")
        finally:
            self.running = False
            loop.remove_reader(self.tun.fd)
            loop.remove_reader(self.udp.fileno())
            for link in list(self.links.values()):
                link.close(CloseReason.SHUTDOWN, "agent stopping")
            self.server.close()
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if status_server is not None:
                status_server.close()
                with contextlib.suppress(OSError):
                    self.config.control_socket.unlink()
            for p in self.peers:
                p.ring.wipe_all()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- the peer set (fixed in serverless mode, live in enrolled mode) -----------------------
    def add_peer(self, pc: PeerConfig, rebuild: bool = True) -> Peer:
        peer = Peer(pc, self.config.relay_rate_pps)
        pid = pc.peer_id
        self.peers.append(peer)
        self.by_id[pid] = peer
        self.datapath.by_id[peer.id_bytes] = peer
        ev = asyncio.Event()
        ev.set()
        self.no_link[pid] = ev
        self.hs_buckets[pid] = _HandshakeBucket()
        self.sessions[pid] = self._new_session(peer)
        self.server.max_connections = 2 * len(self.peers) + 8
        if rebuild:
            self._resolve_hub(peer)
            for other in self.peers:  # peers that name this one as their relay
                if other.config.via == pid:
                    self._resolve_hub(other)
            self._rebuild_table()
        self._start_dialer(peer)
        log.info("peer %s (%s, %s) added%s", pc.name, pid[:8], pc.overlay_ip,
                 f", relay {pc.via[:8]}" if pc.via else "")
        return peer

    def remove_peer(self, pid: str, revoked: bool = False) -> None:
        """Close the peer's link, wipe its keys, drop its sessions and routes. A revoked peer is put
        on the CA's revocation list first, so it cannot handshake again."""
        if revoked and isinstance(self.trust, MeshCA):
            self.trust.revoke(pid)
        self.guard.forget(pid)
        peer = self.by_id.pop(pid, None)
        if peer is None:
            return
        self.peers.remove(peer)
        self.datapath.by_id.pop(peer.id_bytes, None)
        task = self.dialers.pop(pid, None)
        if task is not None:
            task.cancel()
        link = self.links.pop(pid, None)
        if link is not None:
            link.close(CloseReason.REVOKED if revoked else CloseReason.NORMAL,
                       "revoked" if revoked else "removed from the netmap")
        self.no_link.pop(pid, None)
        peer.pending.clear()
        self.datapath.drop_sessions(peer)
        for table in (self.initiators, self.responders, self.hs_buckets, self.sessions, self.link_keepalive):
            table.pop(pid, None)
        for other in self.peers:
            if other.hub is peer:
                other.hub = None
                self._resolve_hub(other)
        self.server.max_connections = 2 * len(self.peers) + 8
        self._rebuild_table()
        log.info("peer %s (%s) %s", peer.config.name, pid[:8], "REVOKED: dropped" if revoked else "removed")

    def update_peer(self, pc: PeerConfig, reset_sessions: bool = False) -> None:
        """New endpoint, relay, name or routes for a known peer; `reset_sessions` when its identity
        (certificate or overlay IP) changed: live sessions were authenticated under the old one."""
        peer = self.by_id.get(pc.peer_id)
        if peer is None:
            return
        old = peer.config
        peer.config = pc
        if reset_sessions:
            link = self.links.pop(pc.peer_id, None)
            if link is not None:
                link.close(CloseReason.NORMAL, "peer identity changed")
                self.no_link[pc.peer_id].set()
            self.datapath.drop_sessions(peer)
            self.initiators.pop(pc.peer_id, None)
            self.sessions[pc.peer_id] = self._new_session(peer)  # no timers of the old identity
        if old.endpoint != pc.endpoint:
            task = self.dialers.pop(pc.peer_id, None)
            if task is not None:
                task.cancel()
            self._start_dialer(peer)
        self._resolve_hub(peer)
        self._rebuild_table()
        log.info("peer %s (%s) updated%s", pc.name, pc.peer_id[:8],
                 ", sessions reset" if reset_sessions else "")

    def _new_session(self, peer: Peer) -> PeerSession:
        return PeerSession(peer.config.peer_id, ring=peer.ring, limits=self.limits,
                           keepalive_s=self.config.keepalive_s, rekey_timeout_s=self.rekey_timeout,
                           jitter=self.jitter)

    def _resolve_hub(self, peer: Peer) -> None:
        """Serverless: `via` is the path. Enrolled: `via` is a fallback, used while no direct
        control link with the peer is up."""
        via = peer.config.via
        hub = self.by_id.get(via) if via and via != peer.config.peer_id else None
        if self.enrolled and hub is not None:
            link = self.links.get(peer.config.peer_id)
            if link is not None and not link.closed.is_set():
                hub = None
        if hub is not peer.hub:
            if self.running:
                log.info("path to %s: %s", peer.config.name,
                         "direct" if hub is None else f"relay via {hub.config.name}")
            peer.hub = hub
            if hub is not None and hub.ring.current is not None:
                self.datapath.flush_pending(peer)

    def _rebuild_table(self, hops=None) -> None:
        """Swap the data path's routing table for one built from the current peer set, or (enrolled)
        from routing.plan.routing_table(netmap) with its hops resolved to our Peer objects."""
        try:
            if hops is None:
                table = RouteTable.build((net, p) for p in self.peers for net in p.config.routed)
            else:
                table = RouteTable.build((net, self.by_id[hop.peer_id]) for net, hop in hops.routes()
                                         if hop.peer_id in self.by_id)
        except RouteConflict as exc:
            log.error("routing table not changed: %s", exc)
            return
        self.datapath.table = table
        self.datapath.route = table.lookup_packed

    def _start_dialer(self, peer: Peer) -> None:
        if not self.running or peer.config.endpoint is None or peer.config.peer_id in self.dialers:
            return
        if peer.config.via is not None and not self.enrolled:
            return  # serverless: a relayed peer is reached through its hub only
        task = self._spawn(self._dialer(peer))
        self.dialers[peer.config.peer_id] = task

    # --- links ------------------------------------------------------------------------------
    def _alloc_index(self) -> int:
        while True:
            index = secrets.randbits(32)
            if index not in self.datapath.sessions:
                return index

    def _make_initiator(self, peer: Peer) -> Initiator:
        return Initiator(self.local, self.trust, peer.config.peer_id, time.time(),
                         local_index=self._alloc_index())

    def _make_responder(self) -> Responder:
        return Responder(self.local, self.trust, time.time(), guard=self.guard,
                         local_index=self._alloc_index())

    def admit(self, peer_id: str) -> bool:
        bucket = self.hs_buckets.get(peer_id)
        return bucket is not None and bucket.take(self.clock())

    async def _dialer(self, peer: Peer) -> None:
        pid = peer.config.peer_id
        host, port = peer.config.endpoint
        backoff = 0.2
        no_link = self.no_link[pid]
        while True:
            await no_link.wait()
            result = await dial(host, port, lambda: self._make_initiator(peer))
            if result is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            reader, writer, channel, hs = result
            if self.by_id.get(pid) is not peer:  # removed while we dialed
                writer.close()
                return
            self._established(reader, writer, channel, hs, [], self.local.peer_id)
            await asyncio.sleep(0)

    def _incoming(self, reader, writer, channel, result, pending) -> None:
        self._established(reader, writer, channel, result, pending, result.peer.peer_id)

    def _established(self, reader, writer, channel, result, pending, initiator_id: str) -> None:
        pid = result.peer.peer_id
        peer = self.by_id.get(pid)
        if peer is None:  # cannot happen with pinned keys; be safe
            writer.close()
            return
        link = Link(reader, writer, channel, peer, initiator_id, self._on_message,
                    idle_timeout=3 * self.config.keepalive_s + 5)
        old = self.links.get(pid)
        if old is not None and not old.closed.is_set():
            preferred = min(self.local.peer_id, pid)
            if link.initiator_id != old.initiator_id and link.initiator_id != preferred:
                log.debug("%r: keeping the link dialed by %s", old, preferred[:8])
                link.close(CloseReason.REPLACED, "a link already exists")
                self._install(peer, result)
                return
            old.close(CloseReason.REPLACED, "replaced by a newer link")
        self.links[pid] = link
        self.no_link[pid].clear()
        self._resolve_hub(peer)
        log.info("control link with %s (%s) up, dialed by %s", peer.config.name, link.remote_ip,
                 "us" if initiator_id == self.local.peer_id else "them")
        self._install(peer, result)
        ip = "0.0.0.0" if self.config.listen_ip.is_unspecified else str(self.config.listen_ip)  # noqa: S104
        if self.config.listen_ip.version == 6 and self.config.listen_ip.is_unspecified:
            ip = "::"
        link.send(UdpEndpoint(ipaddress.ip_address(ip), self.udp.port))
        self._spawn(self._run_link(link, pending))
        # a hub link came up: start the relayed sessions that go through it
        now = self.clock()
        for other in self.peers:
            if other.hub is peer and other.ring.current is None:
                session = self.sessions[other.config.peer_id]
                self._act(other, session.path_up(now) or session.need_keys(now))

    async def _run_link(self, link: Link, pending) -> None:
        try:
            await link.run(pending)
        finally:
            pid = link.peer.config.peer_id
            if self.links.get(pid) is link:
                del self.links[pid]
                self.no_link[pid].set()
                log.info("control link with %s down", link.peer.config.name)
                if self.by_id.get(pid) is link.peer:
                    self._resolve_hub(link.peer)

    # --- control messages -------------------------------------------------------------------
    def _on_message(self, link: Link, msg) -> None:
        peer = link.peer
        if isinstance(msg, UdpEndpoint):
            host = link.remote_ip if msg.ip.is_unspecified else str(msg.ip)
            if peer.hub is None:
                peer.endpoint = (host, msg.port)
                self.datapath.flush_pending(peer)
                for other in self.peers:
                    if other.hub is peer:
                        self.datapath.flush_pending(other)
        elif isinstance(msg, Handshake):
            self._on_handshake(peer, msg.message)
        elif isinstance(msg, RelayHandshake):
            self._on_relay_handshake(link, msg)
        elif isinstance(msg, Keepalive):
            pass  # link.last_rx was refreshed by the read
        elif isinstance(msg, Routes):
            log.debug("%r: ROUTES ignored in serverless mode", link)

    def _on_relay_handshake(self, link: Link, msg: RelayHandshake) -> None:
        src = link.peer
        if self.public and src.hub is None:
            # hub role: forward unread to the destination's link, naming the source
            dest_link = self.links.get(msg.peer_id)
            if dest_link is not None and dest_link.peer is not src:
                self.relayed_handshakes += 1
                dest_link.send(RelayHandshake(src.config.peer_id, msg.message))
                return
        origin = self.by_id.get(msg.peer_id)
        if origin is not None and (origin.hub is src
                                   or (self.enrolled and origin.config.via == src.config.peer_id)):
            self._on_handshake(origin, msg.message)

    def _send_handshake(self, peer: Peer, message: bytes) -> bool:
        if peer.hub is None:
            link = self.links.get(peer.config.peer_id)
            return link is not None and link.send(Handshake(message))
        hub_link = self.links.get(peer.hub.config.peer_id)
        return hub_link is not None and hub_link.send(RelayHandshake(peer.config.peer_id, message))

    def _on_handshake(self, peer: Peer, message: bytes) -> None:
        pid = peer.config.peer_id
        now = time.time()
        try:
            kind = message_type(message)
            if kind is MessageType.HELLO:
                if not self.admit(pid):
                    return
                responder = self._make_responder()
                if responder.consume_hello(message, now) != pid:
                    return
                self.responders[pid] = (responder, self.clock())
                self._send_handshake(peer, responder.create_challenge())
            elif kind is MessageType.CHALLENGE:
                initiator = self.initiators.pop(pid, None)
                if initiator is None:
                    return
                try:
                    initiator.consume_challenge(message, now)
                except HandshakeError:
                    session = self.sessions.get(pid)
                    if session is not None:
                        session.handshake_failed(self.clock())
                    raise
                self._send_handshake(peer, initiator.create_confirm())
                self._install(peer, initiator.result)
            elif kind is MessageType.CONFIRM:
                entry = self.responders.pop(pid, None)
                if entry is None:
                    return
                self._install(peer, entry[0].consume_confirm(message, now))
        except HandshakeError as exc:
            log.info("handshake with %s failed: %s: %s", peer.config.name, type(exc).__name__, exc)

    def _install(self, peer: Peer, result) -> None:
        if result.peer.peer_id != peer.config.peer_id:
            log.warning("handshake result for %s arrived on %s's path; ignored", result.peer.peer_id,
                        peer.config.name)
            return
        kp = result.keypair
        kp.created_at = self.clock()  # the data path's clock
        kp.limits = self.limits
        self.datapath.install(peer, kp, confirmed=not result.initiator)
        session = self.sessions.get(peer.config.peer_id)
        if session is not None:
            session.keys_installed(kp.created_at)
        log.info("session with %s: new keys (%s, index %08x)", peer.config.name,
                 "initiator" if result.initiator else "responder", kp.local_index)
        if not result.initiator:
            # our first frame on the new keys lets the initiator switch to them
            self.datapath.send_keepalive(peer)

    def request_handshake(self, peer: Peer) -> bool:
        """I/O for a StartHandshake event: send a fresh HELLO to `peer` over its control link (or
        its hub's). Whether and when to try is the session's call. False if it could not leave."""
        path_peer = peer if peer.hub is None else peer.hub
        link = self.links.get(path_peer.config.peer_id)
        if link is None or link.closed.is_set():
            return False  # the dialer (or the peer) will open a link; its handshake yields keys
        initiator = self._make_initiator(peer)
        self.initiators[peer.config.peer_id] = initiator
        return self._send_handshake(peer, initiator.create_hello())

    # --- session timers: facts in, events out ------------------------------------------------
    def _on_handshake_needed(self, peer: Peer) -> None:
        """The data path's callback: `peer` has no usable keys, or its sending keys want a rekey."""
        session = self.sessions.get(peer.config.peer_id)
        if session is None:
            return
        now = self.clock()
        cur = peer.ring.current
        reason = HandshakeReason.REKEY if cur is not None and cur.usable(now) else HandshakeReason.NO_KEYS
        self._act(peer, session.need_keys(now, reason))

    def _act(self, peer: Peer, events) -> None:
        """Carry out what a peer's session asked for."""
        pid = peer.config.peer_id
        for ev in events:
            match ev:
                case StartHandshake():
                    if not self.request_handshake(peer):
                        session = self.sessions.get(pid)
                        if session is not None:
                            session.handshake_unsent(self.clock())
                case HandshakeTimedOut():
                    self.initiators.pop(pid, None)  # a late CHALLENGE for it is ignored
                case HandshakeGaveUp(attempts=attempts):
                    dropped = len(peer.pending)
                    peer.pending.clear()
                    log.info("handshake with %s: no keys after %d attempts; gave up (%d queued packets "
                             "dropped) until there is new traffic", peer.config.name, attempts, dropped)
                case SendKeepalive():
                    session = self.sessions.get(pid)
                    if self.datapath.send_keepalive(peer) and session is not None:
                        session.on_data_sent(peer.last_tx)  # an echo request: the peer answers it
                case KeysExpired(keypairs=keypairs):
                    self.datapath.sweep()  # forget their receiver indices
                    log.debug("session with %s: %d keypair(s) expired", peer.config.name, len(keypairs))

    def _session_tick(self, now: float) -> None:
        """Every session: first the traffic the data path stamped since the last tick, then its
        timers. The data path stamps peer.last_tx for any frame it sends (data, echo keepalives
        and their answers, all of which the peer follows with traffic of its own) and
        peer.last_rx for any authenticated frame; in time order, so a reply disarms the
        no-reply check of a send before it."""
        for peer in list(self.peers):
            session = self.sessions.get(peer.config.peer_id)
            if session is None:
                continue
            tx, rx = peer.last_tx, peer.last_rx
            sent = tx > (session.last_sent or 0.0)
            received = rx > (session.last_received or 0.0)
            if sent and received and rx < tx:
                session.on_received(rx)
                received = False
            if sent:
                session.on_data_sent(tx)
            if received:
                session.on_received(rx)
            self._act(peer, session.handle_timer(now))

    def _rtt_probes(self, now: float) -> None:
        """An echo request to every peer with keys once per keepalive_s, whatever the traffic: the
        session sends keepalives only on idle links, but rtt_ms (status, dashboard) must stay
        fresh under load too. A probe is one small frame per peer and period."""
        period = self.config.keepalive_s
        for peer in self.peers:
            sent = peer.echo_sent
            if (sent is None or now - sent[1] >= period) and peer.ring.current is not None:
                self.datapath.send_keepalive(peer)

    # --- enrolled mode: netmaps from the server --------------------------------------------------
    async def apply_netmap(self, netmap) -> None:
        """Take the agent from the applied netmap to `netmap` without a restart (routing.plan).
        Everything but the kernel routes changes at once, on the loop thread; the routes follow
        (netlink, in a worker thread: pyroute2 runs its own event loop)."""
        if netmap.node.peer_id != self.local.peer_id:
            log.error("netmap %d is for %s, not for us; ignored", netmap.serial, netmap.node.peer_id)
            return
        if self.revoked_self:
            return
        revoked = {r.peer_id for r in netmap.revoked}
        if isinstance(self.trust, MeshCA):
            for pid in revoked:  # first: no handshake of a revoked peer may complete from now on
                self.trust.revoke(pid)
            peers, _routes = effective(netmap)
            self.trust.known = set(peers)
        actions = plan(self.applied, netmap)
        route_changes = False
        for action in actions:
            match action:
                case SetSelf(node=node):
                    self.public = node.is_public or node.is_relay
                    self.datapath.is_hub = self.public
                    if node.overlay_ip != str(self.config.overlay.ip):
                        log.error("the server moved this node to %s; restart the agent to re-address",
                                  node.overlay_ip)
                case RemovePeer(peer_id=pid, revoked=was_revoked):
                    self.remove_peer(pid, revoked=was_revoked)
                case AddPeer(peer=p):
                    self.add_peer(netmap_peer_config(p, netmap.routes))
                case UpdatePeer(new=p, reset_sessions=reset):
                    self.update_peer(netmap_peer_config(p, netmap.routes), reset)
                case RemoveRoute() | AddRoute():
                    route_changes = True
        # routes changed: the peers they go through get new allowed prefixes
        if route_changes:
            for pid, peer in self.by_id.items():
                nm_peer = netmap.peer(pid)
                if nm_peer is not None:
                    pc = netmap_peer_config(nm_peer, netmap.routes)
                    if pc != peer.config:
                        peer.config = pc
        self.applied = netmap
        self._rebuild_table(routing_table(netmap))
        await self._sync_kernel_routes()
        log.info("netmap %d applied: %d peers, %d routes, %d revoked (%d actions)", netmap.serial,
                 len(self.peers), len(netmap.routes), len(revoked), len(actions))

    async def _sync_kernel_routes(self) -> None:
        wanted = {n for p in self.peers for n in p.config.allowed_ips}
        add, remove = wanted - self.kernel_routes, self.kernel_routes - wanted
        if not add and not remove:
            return
        try:
            await asyncio.to_thread(tunmod.set_routes, self.tun.name, self.config.overlay,
                                    add=sorted(add, key=str), remove=sorted(remove, key=str))
            self.kernel_routes = wanted
        except tunmod.TunError as exc:
            log.error("kernel routes: %s", exc)

    def on_revoked(self) -> None:
        """The server closed our link with REVOKED: we are no member any more; drop every peer and
        remember it (state dir), so a restart does not bring the old netmap's peers back."""
        self.revoked_self = True
        for pid in list(self.by_id):
            self.remove_peer(pid)
        if self.state_dir is not None:
            from .enroll import write_private_file

            with contextlib.suppress(OSError):
                write_private_file(self.state_dir / REVOKED_FILE, b"revoked by the server\n")
        log.error("this node was revoked by the server; all peers dropped (enroll again to rejoin)")

    async def _run_server_link(self) -> None:
        link = self.server_link
        try:
            await link.run()
        except Exception:
            log.exception("server link failed")
            return
        if link.revoked:
            self.on_revoked()

    # --- housekeeping -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self.tick(self.clock())

    def tick(self, now: float) -> None:
        """One housekeeping round (every TICK_S): the session timers, then the index sweep (keys
        that expired or were rotated out), stalled responders, control-link keepalives."""
        self._session_tick(now)
        self._rtt_probes(now)
        self.datapath.sweep()
        for pid, (_party, started) in list(self.responders.items()):
            if now - started > HANDSHAKE_DEADLINE_S:
                del self.responders[pid]
        keepalive = self.config.keepalive_s
        for pid, link in list(self.links.items()):
            if now - self.link_keepalive.get(pid, -keepalive) >= keepalive:
                self.link_keepalive[pid] = now
                link.send(Keepalive(int(time.time() * 1000) & 0xFFFFFFFFFFFFFFFF))

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        now = self.clock()
        node = {
            "peer_id": self.local.peer_id,
            "name": self.config.name,
            "overlay_ip": str(self.config.overlay.ip),
            "uptime_s": round(now - self.started, 3),
            "drops": self.datapath.drops.as_dict(),
            "relay": {**self.datapath.relay.as_dict(), "handshakes": self.relayed_handshakes},
            "interface": self.tun.name,
            "tun_gro": None if self.datapath.writer is None else {
                "writes": self.datapath.writer.writes, "merged_segments": self.datapath.writer.merged,
                "errors": self.datapath.writer.errors},
            "mtu": self.mtu,
            "udp": {"port": self.udp.port, "gso": self.udp.gso, "gro": self.udp.gro,
                    "rcvbuf": self.udp.rcvbuf, "sndbuf": self.udp.sndbuf},
        }
        if self.enrolled:
            link = self.server_link
            node["mode"] = "enrolled"
            node["serial"] = None if self.applied is None else self.applied.serial
            node["server"] = "revoked" if self.revoked_self else (
                "connected" if link is not None and link.connected.is_set() else "disconnected")
            node["revoked_peers"] = sorted(self.trust.revoked) if isinstance(self.trust, MeshCA) else []
        peers = []
        for p in self.peers:
            st = p.stats
            ep = p.endpoint
            link = self.links.get(p.config.peer_id)
            peers.append({
                "peer_id": p.config.peer_id,
                "name": p.config.name,
                "overlay_ip": str(p.config.overlay_ip),
                "path": p.path,
                "endpoint": None if ep is None or p.hub is not None else _fmt(ep),
                "rtt_ms": st.rtt_ms,
                "tx_frames": st.tx_frames,
                "rx_frames": st.rx_frames,
                "tx_bytes": st.tx_bytes,
                "rx_bytes": st.rx_bytes,
                "lost_frames": st.lost_frames,
                "replayed_frames": st.replayed_frames,
                "bad_frames": st.bad_frames,
                "last_handshake_s": None if p.last_handshake is None else round(now - p.last_handshake, 3),
                "relayed_frames": st.relayed_frames,
                "handshakes": st.handshakes,
                "control": "up" if link is not None and not link.closed.is_set() else "down",
                "allowed_ips": [str(n) for n in p.config.allowed_ips],
            })
        return status_document(node, peers)


class _HandshakeBucket(TokenBucket):
    def __init__(self) -> None:
        super().__init__(HANDSHAKE_RATE)
        self.burst = self.tokens = float(HANDSHAKE_BURST)


def _fmt(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_control(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(exc.errno, f"TCP control port {port} on {host} is already in use") from None
        raise
    return sock


def run_agent(config: AgentConfig, identity: NodeIdentity) -> None:
    """Serverless mode: run in the foreground until SIGINT/SIGTERM. Raises AgentStartError for
    start-up failures."""
    for p in config.peers:
        if p.peer_id == identity.peer_id:
            raise AgentStartError(f"{config.path}: a [[peer]] has this node's own key ({p.peer_id})", 3)
    _run(config, identity, choose_mtu(config), [n for p in config.peers for n in p.routed], {}, None)


def run_enrolled(state_dir) -> None:
    """Enrolled mode (`up --state-dir`): the tunnel plus the server link, peers from the netmap."""
    from .config import ConfigError, enrolled_config, enrolled_settings, parse_endpoint
    from .enroll import EnrollError, load_state
    from .identity import IdentityFileError
    from .protocol import netmap as nm
    from .protocol.cert import CertificateError, verify_certificate
    from .server_link import ServerLink

    try:
        state = load_state(state_dir)
        settings = enrolled_settings(state.state_dir)
    except (EnrollError, IdentityFileError, ConfigError) as exc:
        raise AgentStartError(str(exc), 3) from None
    try:
        cert = verify_certificate(state.certificate, state.ca_public_key, int(time.time()))
    except CertificateError as exc:
        raise AgentStartError(f"{state.state_dir}: our certificate: {exc} (enroll again)", 3) from None
    config = enrolled_config(state, cert, settings)
    host = None
    if settings["endpoint"]:
        try:
            host = parse_endpoint(settings["endpoint"])[0]
        except ValueError:
            host = None
    if host is None and not config.listen_ip.is_unspecified:
        host = str(config.listen_ip)
    if host is None:
        host = _local_address_towards(state.server)
    endpoints = () if host is None else (nm.Endpoint(host, config.control_port, config.udp_port),)
    mtu = tunmod.overlay_mtu(config.overlay.version, RELAY_OVERHEAD)  # any peer may fall back to a relay

    def attach(agent: Agent) -> None:
        agent.state_dir = state.state_dir
        if (state.state_dir / REVOKED_FILE).exists():
            agent.revoked_self = True
            log.error("this node was revoked (%s); it has no peers until it enrolls again",
                      state.state_dir / REVOKED_FILE)
        agent.server_link = ServerLink(state.state_dir, agent.apply_netmap, agent.status, endpoints=endpoints)

    _run(config, state.identity, mtu, [], {"certificate": state.certificate,
                                           "ca_public_key": state.ca_public_key}, attach)


def _local_address_towards(server: str) -> str | None:
    """The source address the kernel would use to reach the server (no packet is sent)."""
    from urllib.parse import urlsplit

    parts = urlsplit(server)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_UDP)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            return s.getsockname()[0]
    except (OSError, IndexError, TypeError):
        return None


def _run(config: AgentConfig, identity: NodeIdentity, mtu: int, routes, agent_kwargs: dict, attach) -> None:
    host = str(config.listen_ip)
    try:
        udp = UdpSocket.open(host, config.udp_port)
    except PortInUse as exc:
        raise AgentStartError(exc.strerror, 5) from None
    except OSError as exc:
        raise AgentStartError(f"UDP {host}:{config.udp_port}: {exc.strerror}") from None
    try:
        control_sock = _bind_control(host, config.control_port)
    except PortInUse as exc:
        udp.close()
        raise AgentStartError(exc.strerror, 5) from None
    except OSError as exc:
        udp.close()
        raise AgentStartError(f"TCP {host}:{config.control_port}: {exc.strerror}") from None
    try:
        # SHADOWMESH_TUN_VNET=0 turns the userspace GRO path off (for A/B benchmarks)
        tun = tunmod.TunDevice.open(config.interface, vnet=os.environ.get("SHADOWMESH_TUN_VNET", "1") != "0")
    except tunmod.TunError as exc:
        udp.close()
        control_sock.close()
        raise AgentStartError(str(exc), 4 if "permitted" in str(exc) or "root" in str(exc) else 1) from None

    async def main() -> None:
        agent = Agent(config, identity, tun, udp, control_sock, mtu, **agent_kwargs)
        if attach is not None:
            attach(agent)
        await agent.run()

    try:
        tunmod.configure(tun.name, config.overlay, mtu, routes)
        asyncio.run(main())
    except tunmod.TunError as exc:
        raise AgentStartError(str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            tunmod.teardown(tun.name, config.overlay, routes)
        tun.close()
        udp.close()
        control_sock.close()
        log.info("stopped; %s removed", tun.name)
