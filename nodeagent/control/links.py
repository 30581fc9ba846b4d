"""The control links: one authenticated TCP link per peer, who dials, which link a pair keeps, and
what arrives on it.

  1. listen: the control-port listener (control/server.py) takes incoming links; admission and
     the responder come from the handshake driver (control/handshakes.py).
  2. dial: one dialer task per peer that has an endpoint (serverless: not for a relayed peer,
     reached through its hub only). It waits while a link is up, dials (control/client.py),
     and after a failure waits `dial_delay`: 0.2 s doubling to a cap of 60 s, the upper half of
     it random, so an endpoint that never answers costs one attempt a minute and a fleet of
     agents does not dial in step. A link that comes up resets it; so does a new endpoint from
     the netmap (the dialer is replaced).
  3. a link is up (`_established`, either direction): election (control/election.py) — a pair
     keeps one link; when both dial at once, the link dialed by the lower peer id wins on both
     sides, and a redial by the same side replaces the old link (a restarted peer). The loser is
     closed and the keys of its handshake are dropped: each side finished one of the two
     handshakes as initiator and the other as responder, in either order, so installing both
     could leave the two sides sending on different keys; the elected link's keys are the same.
     The winner: the path is chosen again (a direct link ends an enrolled fallback relay), keys
     installed, our UDP endpoint announced (UDP_ENDPOINT), the link's reader started; relayed
     sessions that go through this peer as their hub start their handshakes (`on_hub_up`).
  4. messages (`_on_message`): UDP_ENDPOINT -> the peer's data endpoint (direct peers only),
     then packets parked for it and for the peers it relays are flushed; an address no peer
     should be sent to (protocol/endpoints.py: loopback unless we listen on loopback ourselves,
     unspecified, link-local, multicast, broadcast) is refused, logged and counted; HANDSHAKE and
     RELAY_HANDSHAKE -> the handshake driver; KEEPALIVE -> nothing (the read refreshed the
     link); ROUTES -> ignored (serverless).
  5. a link is down (`_run_link` ends): the dialer dials again, the path is chosen again.
  6. every tick (`keepalives`): a KEEPALIVE on every link once per `keepalive_s`; a link
     silent for 3 x keepalive_s + 5 s is closed by its reader (control/link.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Protocol

from ..protocol.control import CloseReason, Handshake, Keepalive, RelayHandshake, Routes, UdpEndpoint
from ..protocol.endpoints import BadEndpoint, check_endpoint_ip, check_port
from ..protocol.handshake import HandshakeResult, Initiator, Responder
from ..tunnel.datapath import Peer
from .client import dial
from .crypto import CryptoWorkers
from .election import keep_existing_link
from .link import Link
from .server import ControlServer

__all__ = ["HandshakeDriver", "Links", "dial_delay"]

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 60.0


def dial_delay(failures: int, rand: float) -> float:
    """Seconds to wait after `failures` failed dials in a row (>= 1), `rand` uniform in [0, 1):
    the base doubles from 0.2 s to the 60 s cap; the wait is the base's upper half, at random."""
    base = min(BACKOFF_FIRST_S * 2 ** min(max(failures, 1) - 1, 32), BACKOFF_MAX_S)
    return base / 2 + base / 2 * rand


class HandshakeDriver(Protocol):
    """What the links need from the handshake driver (control/handshakes.py)."""

    def make_initiator(self, peer: Peer) -> Initiator: ...

    def make_responder(self) -> Responder: ...

    def admit(self, peer_id: str) -> bool: ...

    workers: CryptoWorkers  # where the handshake cryptography runs

    def install(self, peer: Peer, result: HandshakeResult) -> None: ...

    def on_handshake(self, peer: Peer, message: bytes) -> None: ...

    def on_relay_handshake(self, link: Link, msg: RelayHandshake) -> None: ...


class Links:
    def __init__(self, local_peer_id: str, peers, handshakes: HandshakeDriver, *, listen_ip, udp_port: int,
                 keepalive_s: float, dial_relayed: bool, flush_pending: Callable[[Peer], None],
                 on_path_change: Callable[[Peer], None], on_hub_up: Callable[[Peer], None],
                 spawn: Callable[[Coroutine], asyncio.Task], is_running: Callable[[], bool]) -> None:
        """`peers`: the PeerSet; `listen_ip`, `udp_port`: what UDP_ENDPOINT announces;
        `dial_relayed`: also dial peers that have a relay (enrolled: the relay is a fallback);
        `flush_pending(peer)`: the data path sends what it parked; `on_path_change(peer)`: choose
        the peer's path again (paths/select.py); `on_hub_up(hub)`: start the sessions relayed
        through `hub` (sessions.py); `spawn(coro)`: a task the agent cancels when it stops;
        `is_running()`: dialers start only once the agent runs."""
        self.local_peer_id = local_peer_id
        self.peers = peers
        self.handshakes = handshakes
        self.listen_ip = listen_ip
        self.udp_port = udp_port
        self.keepalive_s = keepalive_s
        self.dial_relayed = dial_relayed
        self.flush_pending = flush_pending
        self.on_path_change = on_path_change
        self.on_hub_up = on_hub_up
        self.spawn = spawn
        self.is_running = is_running
        self.allow_loopback = listen_ip.is_loopback  # a lab on one host: peers' loopback addresses work
        self.rng = random.random
        self.sleep = asyncio.sleep  # the dialers' backoff (tests replace both)
        self.refused_endpoints = 0  # UDP_ENDPOINT messages naming an address we will not send to
        self.links: dict[str, Link] = {}
        self.no_link: dict[str, asyncio.Event] = {}  # set while the peer has no link: its dialer dials
        self.dialers: dict[str, asyncio.Task] = {}
        self.keepalive_sent: dict[str, float] = {}  # peer id -> last control-link KEEPALIVE
        self.server = ControlServer(handshakes.make_responder, handshakes.admit, self._incoming,
                                    handshakes.workers)

    def get(self, peer_id: str) -> Link | None:
        return self.links.get(peer_id)

    def is_up(self, peer_id: str) -> bool:
        link = self.links.get(peer_id)
        return link is not None and not link.closed.is_set()

    # --- lifecycle ------------------------------------------------------------------------------
    async def listen(self, sock: socket.socket) -> None:
        self.server.server = await asyncio.start_server(self.server._accept, sock=sock)

    def start_dialers(self) -> None:
        for p in self.peers:
            self._start_dialer(p)

    def close_all(self) -> None:
        for link in list(self.links.values()):
            link.close(CloseReason.SHUTDOWN, "agent stopping")
        self.server.close()

    def keepalives(self, now: float) -> None:
        keepalive = self.keepalive_s
        for pid, link in list(self.links.items()):
            if now - self.keepalive_sent.get(pid, -keepalive) >= keepalive:
                self.keepalive_sent[pid] = now
                link.send(Keepalive(int(time.time() * 1000) & 0xFFFFFFFFFFFFFFFF))

    # --- the peer set changed (peers.PeerSet listener) ------------------------------------------
    def peer_added(self, peer: Peer) -> None:
        ev = asyncio.Event()
        ev.set()
        self.no_link[peer.config.peer_id] = ev
        self._start_dialer(peer)

    def peer_removed(self, peer: Peer, revoked: bool) -> None:
        pid = peer.config.peer_id
        task = self.dialers.pop(pid, None)
        if task is not None:
            task.cancel()
        link = self.links.pop(pid, None)
        if link is not None:
            link.close(CloseReason.REVOKED if revoked else CloseReason.NORMAL,
                       "revoked" if revoked else "removed from the netmap")
        self.no_link.pop(pid, None)
        self.keepalive_sent.pop(pid, None)

    def peer_changed(self, peer: Peer, old_config, reset_sessions: bool) -> None:
        pid = peer.config.peer_id
        if reset_sessions:
            link = self.links.pop(pid, None)
            if link is not None:
                link.close(CloseReason.NORMAL, "peer identity changed")
                self.no_link[pid].set()
        if old_config.endpoint != peer.config.endpoint:
            task = self.dialers.pop(pid, None)
            if task is not None:
                task.cancel()
            self._start_dialer(peer)

    # --- dialing --------------------------------------------------------------------------------
    def _start_dialer(self, peer: Peer) -> None:
        if not self.is_running() or peer.config.endpoint is None or peer.config.peer_id in self.dialers:
            return
        if peer.config.via is not None and not self.dial_relayed:
            return  # serverless: a relayed peer is reached through its hub only
        task = self.spawn(self._dialer(peer))
        self.dialers[peer.config.peer_id] = task

    async def _dialer(self, peer: Peer) -> None:
        pid = peer.config.peer_id
        endpoint = peer.config.endpoint
        assert endpoint is not None  # _start_dialer dials only peers with an endpoint
        host, port = endpoint
        failures = 0
        no_link = self.no_link[pid]
        while True:
            await no_link.wait()
            result = await dial(host, port, lambda: self.handshakes.make_initiator(peer),
                                self.handshakes.workers.run_peers)
            if result is None:
                failures += 1
                await self.sleep(dial_delay(failures, self.rng()))
                continue
            failures = 0
            reader, writer, channel, hs = result
            if self.peers.get(pid) is not peer:  # removed while we dialed
                writer.close()
                return
            self._established(reader, writer, channel, hs, [], self.local_peer_id)
            await asyncio.sleep(0)

    def _incoming(self, reader, writer, channel, result, pending) -> None:
        self._established(reader, writer, channel, result, pending, result.peer.peer_id)

    # --- a link is up / down ----------------------------------------------------------------------
    def _established(self, reader, writer, channel, result, pending, initiator_id: str) -> None:
        pid = result.peer.peer_id
        peer = self.peers.get(pid)
        if peer is None:  # cannot happen with pinned keys; be safe
            writer.close()
            return
        link = Link(reader, writer, channel, peer, initiator_id, self._on_message,
                    idle_timeout=3 * self.keepalive_s + 5)
        old = self.links.get(pid)
        if old is not None and not old.closed.is_set():
            if keep_existing_link(self.local_peer_id, pid, old.initiator_id, link.initiator_id):
                log.debug("%r: keeping the link dialed by %s", old, min(self.local_peer_id, pid)[:8])
                link.close(CloseReason.REPLACED, "a link already exists")
                return  # its keys are dropped: the peer, electing alike, sends on the kept link's keys
            old.close(CloseReason.REPLACED, "replaced by a newer link")
        self.links[pid] = link
        self.no_link[pid].clear()
        self.on_path_change(peer)
        log.info("control link with %s (%s) up, dialed by %s", peer.config.name, link.remote_ip,
                 "us" if initiator_id == self.local_peer_id else "them",
                 extra={"event": "link.up", "peer_id": pid})
        self.handshakes.install(peer, result)
        ip = "0.0.0.0" if self.listen_ip.is_unspecified else str(self.listen_ip)  # noqa: S104
        if self.listen_ip.version == 6 and self.listen_ip.is_unspecified:
            ip = "::"
        link.send(UdpEndpoint(ipaddress.ip_address(ip), self.udp_port))
        self.spawn(self._run_link(link, pending))
        # a hub link came up: start the relayed sessions that go through it
        self.on_hub_up(peer)

    async def _run_link(self, link: Link, pending) -> None:
        try:
            await link.run(pending)
        finally:
            pid = link.peer.config.peer_id
            if self.links.get(pid) is link:
                del self.links[pid]
                self.no_link[pid].set()
                log.info("control link with %s down", link.peer.config.name,
                         extra={"event": "link.down", "peer_id": pid})
                if self.peers.get(pid) is link.peer:
                    self.on_path_change(link.peer)

    # --- control messages -----------------------------------------------------------------------
    def _on_message(self, link: Link, msg) -> None:
        peer = link.peer
        if isinstance(msg, UdpEndpoint):
            host = link.remote_ip if msg.ip.is_unspecified else str(msg.ip)
            try:
                host = str(check_endpoint_ip(host, allow_loopback=self.allow_loopback))
                check_port(msg.port, "UDP port")
            except BadEndpoint as exc:
                self.refused_endpoints += 1
                log.warning("%r: UDP_ENDPOINT refused: %s", link, exc)
                return
            if peer.hub is None:
                peer.endpoint = (host, msg.port)
                self.flush_pending(peer)
                for other in self.peers:
                    if other.hub is peer:
                        self.flush_pending(other)
        elif isinstance(msg, Handshake):
            self.handshakes.on_handshake(peer, msg.message)
        elif isinstance(msg, RelayHandshake):
            self.handshakes.on_relay_handshake(link, msg)
        elif isinstance(msg, Keepalive):
            pass  # link.last_rx was refreshed by the read
        elif isinstance(msg, Routes):
            log.debug("%r: ROUTES ignored in serverless mode", link)
