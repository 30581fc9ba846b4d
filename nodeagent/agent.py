"""The agent supervisor (serverless mode): owns the event loop, the TUN, the sockets and the peers.

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
  - a 0.25 s housekeeping tick: key expiry, stalled-handshake cut-off (5 s), rekey when a
    keypair asks for it, UDP keepalives with echo (rtt_ms) and control keepalives every
    `keepalive_s`;
  - the local status socket (control/local.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import secrets
import signal
import socket
import time

from .config import AgentConfig
from .control.client import dial
from .control.link import HANDSHAKE_DEADLINE_S, Link
from .control.local import LocalSocketError, serve_status
from .control.server import ControlServer
from .identity import NodeIdentity
from .protocol.constants import REJECT_AFTER_TIME_S, REKEY_AFTER_TIME_RECEIVING_S, REKEY_TIMEOUT_S
from .protocol.control import (
    CloseReason,
    Handshake,
    Keepalive,
    RelayHandshake,
    Routes,
    UdpEndpoint,
)
from .protocol.frames import FRAME_OVERHEAD, RELAY_OVERHEAD
from .protocol.handshake import (
    HandshakeError,
    HelloGuard,
    Initiator,
    LocalIdentity,
    MessageType,
    PinnedKeys,
    Responder,
    message_type,
)
from .protocol.keys import Limits
from .stats import status_document
from .tunnel import tun as tunmod
from .tunnel.datapath import DataPath, Peer, TokenBucket
from .tunnel.udp import PortInUse, UdpSocket

__all__ = ["Agent", "AgentStartError", "choose_mtu", "run_agent"]

log = logging.getLogger("nodeagent")

TICK_S = 0.25
HANDSHAKE_MIN_INTERVAL_S = 1.0  # a new handshake with one peer at most this often (initiator side)
HANDSHAKE_RATE = 2.0  # responder: handshakes per second and peer, burst below
HANDSHAKE_BURST = 5


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


class Agent:
    def __init__(self, config: AgentConfig, identity: NodeIdentity, tun: tunmod.TunDevice, udp: UdpSocket,
                 control_sock: socket.socket, mtu: int) -> None:
        self.config = config
        self.identity = identity
        self.tun = tun
        self.udp = udp
        self.control_sock = control_sock
        self.mtu = mtu
        self.local = LocalIdentity.pinned(identity.private_key)
        self.trust = PinnedKeys({p.peer_id: p.public_key for p in config.peers})
        self.guard = HelloGuard()
        self.peers = [Peer(p, config.relay_rate_pps) for p in config.peers]
        self.by_id = {p.config.peer_id: p for p in self.peers}
        for p in self.peers:
            if p.config.via:
                p.hub = self.by_id[p.config.via]
        rekey = config.rekey_after_s
        self.limits = Limits() if rekey is None else Limits(
            rekey_after_time=rekey, rekey_after_time_receiving=max(rekey, REKEY_AFTER_TIME_RECEIVING_S),
            reject_after_time=REJECT_AFTER_TIME_S)
        self.datapath = DataPath(tun.fd, udp, self.peers, is_hub=config.public,
                                 on_handshake_needed=self.request_handshake)
        self.links: dict[str, Link] = {}
        self.no_link = {p.config.peer_id: asyncio.Event() for p in self.peers}
        for ev in self.no_link.values():
            ev.set()
        self.initiators: dict[str, tuple[Initiator, float]] = {}
        self.responders: dict[str, tuple[Responder, float]] = {}
        self.hs_buckets = {pid: _HandshakeBucket() for pid in self.by_id}
        self.last_hs_start: dict[str, float] = {}
        self.last_keepalive: dict[str, float] = {}
        self.relayed_handshakes = 0
        self.started = time.monotonic()
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.server = ControlServer(self._make_responder, self.admit, self._incoming,
                                    max_connections=2 * len(self.peers) + 8)
        self.server.open_links = lambda: len(self.links)

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
            for p in self.peers:
                if p.hub is None and p.config.endpoint is not None:
                    self._spawn(self._dialer(p))
            self._spawn(self._housekeeping())
            log.info("agent %s (%s) up: %s on %s mtu %d, udp %d (gso %s, gro %s, rcvbuf %d), control %d, "
                     "%d peers", self.config.name, self.local.peer_id, self.config.overlay, self.tun.name,
                     self.mtu, self.udp.port, self.udp.gso, self.udp.gro, self.udp.rcvbuf,
                     self.config.control_port, len(self.peers))
            await self.stop.wait()
            log.info("stopping")
        finally:
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
        return bucket is not None and bucket.take(time.monotonic())

    async def _dialer(self, peer: Peer) -> None:
        pid = peer.config.peer_id
        host, port = peer.config.endpoint
        backoff = 0.2
        while True:
            await self.no_link[pid].wait()
            result = await dial(host, port, lambda: self._make_initiator(peer))
            if result is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            reader, writer, channel, hs = result
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
        log.info("control link with %s (%s) up, dialed by %s", peer.config.name, link.remote_ip,
                 "us" if initiator_id == self.local.peer_id else "them")
        self._install(peer, result)
        ip = "0.0.0.0" if self.config.listen_ip.is_unspecified else str(self.config.listen_ip)  # noqa: S104
        if self.config.listen_ip.version == 6 and self.config.listen_ip.is_unspecified:
            ip = "::"
        link.send(UdpEndpoint(ipaddress.ip_address(ip), self.udp.port))
        self._spawn(self._run_link(link, pending))
        # a hub link came up: start the relayed sessions that go through it
        for other in self.peers:
            if other.hub is peer and other.ring.current is None:
                self.request_handshake(other)

    async def _run_link(self, link: Link, pending) -> None:
        try:
            await link.run(pending)
        finally:
            pid = link.peer.config.peer_id
            if self.links.get(pid) is link:
                del self.links[pid]
                self.no_link[pid].set()
                log.info("control link with %s down", link.peer.config.name)

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
        if self.config.public and src.hub is None:
            # hub role: forward unread to the destination's link, naming the source
            dest_link = self.links.get(msg.peer_id)
            if dest_link is not None and dest_link.peer is not src:
                self.relayed_handshakes += 1
                dest_link.send(RelayHandshake(src.config.peer_id, msg.message))
                return
        origin = self.by_id.get(msg.peer_id)
        if origin is not None and origin.hub is src:
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
                self.responders[pid] = (responder, time.monotonic())
                self._send_handshake(peer, responder.create_challenge())
            elif kind is MessageType.CHALLENGE:
                entry = self.initiators.pop(pid, None)
                if entry is None:
                    return
                initiator = entry[0]
                initiator.consume_challenge(message, now)
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
        kp.created_at = time.monotonic()  # the data path's clock
        kp.limits = self.limits
        self.datapath.install(peer, kp, confirmed=not result.initiator)
        log.info("session with %s: new keys (%s, index %08x)", peer.config.name,
                 "initiator" if result.initiator else "responder", kp.local_index)
        if not result.initiator:
            # our first frame on the new keys lets the initiator switch to them
            self.datapath.send_keepalive(peer)

    def request_handshake(self, peer: Peer) -> None:
        """Start a data-key handshake with `peer` if one is useful and allowed now."""
        pid = peer.config.peer_id
        now = time.monotonic()
        pending = self.initiators.get(pid)
        if pending is not None and now - pending[1] < REKEY_TIMEOUT_S:
            return
        if now - self.last_hs_start.get(pid, -1e9) < HANDSHAKE_MIN_INTERVAL_S:
            return
        path_peer = peer if peer.hub is None else peer.hub
        link = self.links.get(path_peer.config.peer_id)
        if link is None or link.closed.is_set():
            return  # the dialer (or the peer) will open a link; its handshake yields keys
        initiator = self._make_initiator(peer)
        self.initiators[pid] = (initiator, now)
        self.last_hs_start[pid] = now
        self._send_handshake(peer, initiator.create_hello())

    # --- housekeeping -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        keepalive = self.config.keepalive_s
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.datapath.sweep()
            for table in (self.initiators, self.responders):
                for pid, (_party, started) in list(table.items()):
                    if now - started > HANDSHAKE_DEADLINE_S:
                        del table[pid]
            for peer in self.peers:
                pid = peer.config.peer_id
                kp = peer.ring.current
                if kp is None and peer.ring.next is None:
                    self.request_handshake(peer)
                elif kp is not None and (kp.wants_rekey_sending(now) or kp.wants_rekey_receiving(now)):
                    self.request_handshake(peer)
                if kp is not None and now - self.last_keepalive.get(pid, 0) >= keepalive:
                    self.last_keepalive[pid] = now
                    self.datapath.send_keepalive(peer)
            for link in list(self.links.values()):
                if now - self.last_keepalive.get("link:" + link.peer.config.peer_id, 0) >= keepalive:
                    self.last_keepalive["link:" + link.peer.config.peer_id] = now
                    link.send(Keepalive(int(time.time() * 1000) & 0xFFFFFFFFFFFFFFFF))

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        now = time.monotonic()
        node = {
            "peer_id": self.local.peer_id,
            "name": self.config.name,
            "overlay_ip": str(self.config.overlay.ip),
            "uptime_s": round(now - self.started, 3),
            "drops": self.datapath.drops.as_dict(),
            "relay": {**self.datapath.relay.as_dict(), "handshakes": self.relayed_handshakes},
            "interface": self.tun.name,
            "mtu": self.mtu,
            "udp": {"port": self.udp.port, "gso": self.udp.gso, "gro": self.udp.gro,
                    "rcvbuf": self.udp.rcvbuf, "sndbuf": self.udp.sndbuf},
        }
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
    """Run in the foreground until SIGINT/SIGTERM. Raises AgentStartError for start-up failures."""
    for p in config.peers:
        if p.peer_id == identity.peer_id:
            raise AgentStartError(f"{config.path}: a [[peer]] has this node's own key ({p.peer_id})", 3)
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
    mtu = choose_mtu(config)
    routes = [n for p in config.peers for n in p.routed]
    try:
        tun = tunmod.TunDevice.open(config.interface)
    except tunmod.TunError as exc:
        udp.close()
        control_sock.close()
        raise AgentStartError(str(exc), 4 if "permitted" in str(exc) or "root" in str(exc) else 1) from None
    try:
        tunmod.configure(tun.name, config.overlay, mtu, routes)
        asyncio.run(Agent(config, identity, tun, udp, control_sock, mtu).run())
    except tunmod.TunError as exc:
        raise AgentStartError(str(exc)) from None
    finally:
        with contextlib.suppress(Exception):
            tunmod.teardown(tun.name, config.overlay, routes)
        tun.close()
        udp.close()
        control_sock.close()
        log.info("stopped; %s removed", tun.name)
