"""Driving data-key handshakes inside open control links: admission, both roles, relaying, keys.

The first handshake with a peer opens the control link (control/client.py, control/server.py);
its keys are installed here too. Every later one (rekeys, a session after key expiry) runs as
sealed HANDSHAKE messages inside that link, or for a relayed peer as RELAY_HANDSHAKE through
the link to its hub. The cryptography runs on worker threads (control/crypto.py: `peers` for
authenticated work, `door` for HELLOs whose origin is not proven yet), so each message starts a
task (`spawn`). The three messages, as they arrive (`on_handshake`, `on_relay_handshake`):
  1. HELLO (we respond). Limits come before any verification and are never shared with
     strangers: a HELLO inside a peer's own link (sealed under that link's keys, so it is that
     peer's) takes a token from the link's bucket (LINK_RATE, LINK_BURST); a HELLO relayed by a
     hub takes one from that hub link's bucket (RELAY_RATE, RELAY_BURST). A fresh Responder then
     checks the HELLO (known peer, addressed to us, timestamp guard, its signature: handshake.py);
     a relayed HELLO, now authenticated, also takes a token from its peer's own bucket
     (HANDSHAKE_RATE, HANDSHAKE_BURST; `admit`, also asked by the control-port listener after
     the HELLO verified). A HELLO must name the peer whose path it came on. CHALLENGE goes back.
  2. CHALLENGE (we initiated, `request_handshake`): only for the Initiator in flight; a bad one
     tells the session (`on_handshake_failed`) so its retry clock keeps running. CONFIRM goes
     back and our keys are installed.
  3. CONFIRM (we respond): the Responder in flight finishes; keys installed. A responder that
     waits longer than HANDSHAKE_DEADLINE_S for it is cut (`cut_stalled`, every tick).
Installing keys (`install`): the keypair gets the data path's clock, the key limits and the end
of the certificate the peer authenticated with (`Keypair.ends_at`: the keys die with it), goes
into the peer's KeyRing (DataPath.install, which flushes parked packets), and the session
hears of it (`on_keys_installed`). A responder sends a keepalive at once: our first frame on
the new keys lets the initiator switch to them. The keys of a link that lost its election are not
installed (control/links.py): when both sides dialed at once, each side completed one handshake
as initiator and one as responder, in either order, and only the elected link's keys end up the
same on both sides. A peer removed while its handshake was on a worker thread gets nothing
installed.

Relayed handshakes (`on_relay_handshake`): as a hub (public node) with a direct link to the
sender, a RELAY_HANDSHAKE naming another peer is forwarded unread to that peer's link, naming
the sender instead. Otherwise it is for us: accepted only from the hub of the peer it names
(enrolled mode: also from the relay its netmap entry names, the fallback path).

Every HELLO we send carries a timestamp strictly greater than the previous one (`make_initiator`),
so no two of our HELLOs look like a replay of each other to a responder.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine

from ..protocol.control import Handshake, RelayHandshake
from ..protocol.handshake import Initiator, MessageType, Responder, message_type
from ..protocol.handshake_errors import HandshakeError, reason
from ..protocol.hello_guard import HelloGuard
from ..protocol.keys import Limits
from ..protocol.opcount import COUNTS
from ..protocol.trust import LocalIdentity, MeshCA, Trust
from ..ratelimit import TokenBucket
from ..tunnel.datapath import DataPath, Peer
from .admission import Buckets
from .link import HANDSHAKE_DEADLINE_S, Link

__all__ = ["HANDSHAKE_BURST", "HANDSHAKE_RATE", "LINK_BURST", "LINK_RATE", "RELAY_BURST", "RELAY_RATE",
           "HandshakeBucket", "Handshakes"]

log = logging.getLogger(__name__)

HANDSHAKE_RATE = 2.0  # responder: authenticated HELLOs per second and peer (door, relayed), burst below
HANDSHAKE_BURST = 5
LINK_RATE = 2.0  # HELLOs per second inside one peer's own link (its rekeys), burst below
LINK_BURST = 5
RELAY_RATE = 20.0  # HELLOs for us per second through one hub link, before they are verified
RELAY_BURST = 40


class HandshakeBucket(TokenBucket):
    """One peer's handshake admission: HANDSHAKE_RATE per second, burst HANDSHAKE_BURST."""

    __slots__ = ()  # as slim as its base: one per peer

    def __init__(self) -> None:
        super().__init__(HANDSHAKE_RATE, HANDSHAKE_BURST)


class Handshakes:
    def __init__(self, local: LocalIdentity, trust: Trust, *, datapath: DataPath, peers, limits: Limits,
                 clock: Callable[[], float], is_hub: Callable[[], bool], via_is_fallback: bool,
                 link_to: Callable[[str], Link | None],
                 on_keys_installed: Callable[[Peer, float], None],
                 on_handshake_failed: Callable[[Peer], None],
                 spawn: Callable[[Coroutine], object], workers) -> None:
        """`peers`: the PeerSet; `clock`: the data path's monotonic clock; `is_hub()`: we relay
        for others (a public node); `via_is_fallback`: enrolled mode; `link_to(peer_id)`: the
        control link with that peer, if any (control/links.py); `on_keys_installed(peer, now)`
        and `on_handshake_failed(peer)`: facts for the peer's session timers (sessions.py);
        `spawn(coro)`: run a task the agent cancels when it stops; `workers`: where the
        cryptography runs (control/crypto.py)."""
        self.local = local
        self.trust = trust
        self.guard = HelloGuard()
        self.datapath = datapath
        self.peers = peers
        self.limits = limits
        self.clock = clock
        self.is_hub = is_hub
        self.via_is_fallback = via_is_fallback
        self.link_to = link_to
        self.on_keys_installed = on_keys_installed
        self.on_handshake_failed = on_handshake_failed
        self.spawn = spawn
        self.workers = workers
        self.initiators: dict[str, Initiator] = {}  # our data-key handshake in flight, per peer
        self.responders: dict[str, tuple[Responder, float]] = {}  # (responder, started on clock)
        self.buckets: dict[str, HandshakeBucket] = {}  # admission of authenticated HELLOs, per peer
        self.link_buckets = Buckets(LINK_RATE, LINK_BURST)  # HELLOs inside a peer's own link
        self.relay_buckets = Buckets(RELAY_RATE, RELAY_BURST)  # HELLOs through a hub link, per hub
        self.relayed = 0  # RELAY_HANDSHAKE messages forwarded as a hub
        self.refused: Counter[str] = Counter()  # HELLOs refused inside links, by reason
        self._last_hello_ms = 0

    def status(self) -> dict:
        """The "handshake" part of the status document's node (the door adds its own)."""
        return {"crypto": COUNTS.snapshot(), "refused_in_links": dict(sorted(self.refused.items()))}

    # --- the peer set changed (peers.PeerSet listener) ------------------------------------------
    def peer_added(self, peer: Peer) -> None:
        self.buckets[peer.config.peer_id] = HandshakeBucket()

    def peer_removed(self, peer: Peer, revoked: bool) -> None:
        pid = peer.config.peer_id
        if revoked and isinstance(self.trust, MeshCA):
            self.trust.revoke(pid)  # first: it can never handshake again
        self.guard.forget(pid)
        for table in (self.initiators, self.responders, self.buckets):
            table.pop(pid, None)
        self.link_buckets.forget(pid)
        self.relay_buckets.forget(pid)

    def peer_changed(self, peer: Peer, old_config, reset_sessions: bool) -> None:
        if reset_sessions:
            self.initiators.pop(peer.config.peer_id, None)

    # --- admission and the two roles ------------------------------------------------------------
    def admit(self, peer_id: str) -> bool:
        """May `peer_id`, whose HELLO just verified, start a handshake with us now (its token
        bucket)? Unknown peers may not."""
        bucket = self.buckets.get(peer_id)
        return bucket is not None and bucket.take(self.clock())

    def _alloc_index(self) -> int:
        while True:
            index = secrets.randbits(32)
            if index not in self.datapath.sessions:
                return index

    def make_initiator(self, peer: Peer) -> Initiator:
        now = time.time()
        self._last_hello_ms = max(int(now * 1000), self._last_hello_ms + 1)
        return Initiator(self.local, self.trust, peer.config.peer_id, now, local_index=self._alloc_index(),
                         timestamp_ms=self._last_hello_ms)

    def make_responder(self) -> Responder:
        return Responder(self.local, self.trust, time.time(), guard=self.guard,
                         local_index=self._alloc_index())

    def request_handshake(self, peer: Peer) -> bool:
        """I/O for a StartHandshake event: send a fresh HELLO to `peer` over its control link (or
        its hub's). Whether and when to try is the session's call. False if there is no path for
        it (the HELLO is made on a worker thread and sent when ready)."""
        path_peer = peer if peer.hub is None else peer.hub
        link = self.link_to(path_peer.config.peer_id)
        if link is None or link.closed.is_set():
            return False  # the dialer (or the peer) will open a link; its handshake yields keys
        initiator = self.make_initiator(peer)
        self.initiators[peer.config.peer_id] = initiator
        self.spawn(self._send_hello(peer, initiator))
        return True

    async def _send_hello(self, peer: Peer, initiator: Initiator) -> None:
        hello = await self.workers.run_peers(initiator.create_hello)
        if self.initiators.get(peer.config.peer_id) is initiator:  # not given up meanwhile
            self._send(peer, hello)

    def forget_initiator(self, peer_id: str) -> None:
        """The session gave the attempt in flight up: a late CHALLENGE for it is ignored."""
        self.initiators.pop(peer_id, None)

    def cut_stalled(self, now: float) -> None:
        """Forget responders that waited longer than HANDSHAKE_DEADLINE_S for their CONFIRM."""
        for pid, (_party, started) in list(self.responders.items()):
            if now - started > HANDSHAKE_DEADLINE_S:
                del self.responders[pid]

    # --- messages from a control link -------------------------------------------------------------
    def on_handshake(self, peer: Peer, message: bytes, *, relayed_by: Peer | None = None) -> None:
        """A handshake message for `peer`: on its own link, or `relayed_by` its hub."""
        pid = peer.config.peer_id
        try:
            kind = message_type(message)
        except HandshakeError as exc:
            self.refused[reason(exc)] += 1
            log.info("handshake message from %s refused: %s", peer.config.name, exc,
                     extra={"event": "handshake.refused", "peer_id": peer.config.peer_id,
                            "reason": reason(exc)})
            return
        if kind is MessageType.HELLO:
            if relayed_by is None:
                if not self.link_buckets.take(pid, self.clock()):
                    self.refused["link_rate"] += 1
                    return
                self.spawn(self._answer(peer, message, self.workers.run_peers, per_peer=False))
            else:
                if not self.relay_buckets.take(relayed_by.config.peer_id, self.clock()):
                    self.refused["relay_rate"] += 1
                    return
                self.spawn(self._answer(peer, message, self.workers.run_door, per_peer=True))
        elif kind is MessageType.CHALLENGE:
            initiator = self.initiators.pop(pid, None)
            if initiator is not None:
                self.spawn(self._finish_initiator(peer, initiator, message))
        elif kind is MessageType.CONFIRM:
            entry = self.responders.pop(pid, None)
            if entry is not None:
                self.spawn(self._finish_responder(peer, entry[0], message))

    async def _answer(self, peer: Peer, message: bytes, verify_on, per_peer: bool) -> None:
        pid = peer.config.peer_id
        responder = self.make_responder()
        try:
            claimed = await verify_on(responder.consume_hello, message, time.time())
            if claimed != pid:
                self.refused["wrong_path"] += 1
                return
            if per_peer and not self.admit(pid):
                self.refused["peer_rate"] += 1
                return
            if self.peers.get(pid) is not peer:
                return  # removed meanwhile
            challenge = await self.workers.run_peers(responder.create_challenge)
        except HandshakeError as exc:
            self.refused[reason(exc)] += 1
            log.info("handshake with %s refused: %s: %s", peer.config.name, type(exc).__name__, exc,
                     extra={"event": "handshake.refused", "peer_id": peer.config.peer_id,
                            "reason": reason(exc)})
            return
        self.responders[pid] = (responder, self.clock())
        self._send(peer, challenge)

    async def _finish_initiator(self, peer: Peer, initiator: Initiator, message: bytes) -> None:
        try:
            await self.workers.run_peers(initiator.consume_challenge, message, time.time())
            confirm = await self.workers.run_peers(initiator.create_confirm)
        except HandshakeError as exc:
            why = reason(exc)
            failures = peer.stats.handshake_failures
            failures[why] = failures.get(why, 0) + 1
            log.info("handshake with %s failed: %s: %s", peer.config.name, type(exc).__name__, exc,
                     extra={"event": "handshake.failed", "peer_id": peer.config.peer_id, "reason": why})
            self.on_handshake_failed(peer)
            return
        if self.peers.get(peer.config.peer_id) is not peer:
            return
        self._send(peer, confirm)
        self.install(peer, initiator.result)

    async def _finish_responder(self, peer: Peer, responder: Responder, message: bytes) -> None:
        try:
            result = await self.workers.run_peers(responder.consume_confirm, message, time.time())
        except HandshakeError as exc:
            self.refused[reason(exc)] += 1
            log.info("handshake with %s failed: %s: %s", peer.config.name, type(exc).__name__, exc,
                     extra={"event": "handshake.failed", "peer_id": peer.config.peer_id,
                            "reason": reason(exc)})
            return
        if self.peers.get(peer.config.peer_id) is peer:
            self.install(peer, result)

    def on_relay_handshake(self, link: Link, msg: RelayHandshake) -> None:
        src = link.peer
        if self.is_hub() and src.hub is None:
            # hub role: forward unread to the destination's link, naming the source
            dest_link = self.link_to(msg.peer_id)
            if dest_link is not None and dest_link.peer is not src:
                self.relayed += 1
                dest_link.send(RelayHandshake(src.config.peer_id, msg.message))
                return
        origin = self.peers.get(msg.peer_id)
        if origin is not None and (origin.hub is src
                                   or (self.via_is_fallback and origin.config.via == src.config.peer_id)):
            self.on_handshake(origin, msg.message, relayed_by=src)

    def _send(self, peer: Peer, message: bytes) -> bool:
        if peer.hub is None:
            link = self.link_to(peer.config.peer_id)
            return link is not None and link.send(Handshake(message))
        hub_link = self.link_to(peer.hub.config.peer_id)
        return hub_link is not None and hub_link.send(RelayHandshake(peer.config.peer_id, message))
    # --- keys -------------------------------------------------------------------------------------
    def install(self, peer: Peer, result) -> None:
        """Install the keys of a finished handshake (`HandshakeResult`) for `peer`."""
        if result.peer.peer_id != peer.config.peer_id:
            log.warning("handshake result for %s arrived on %s's path; ignored", result.peer.peer_id,
                        peer.config.name)
            return
        kp = result.keypair
        kp.created_at = self.clock()  # the data path's clock
        kp.limits = self.limits
        if result.peer.not_after is not None:  # keys end with the certificate they were made with
            kp.ends_at = kp.created_at + (result.peer.not_after - time.time())
        self.datapath.install(peer, kp, confirmed=not result.initiator)
        self.on_keys_installed(peer, kp.created_at)
        log.info("session with %s: new keys (%s, index %08x)", peer.config.name,
                 "initiator" if result.initiator else "responder", kp.local_index,
                 extra={"event": "session.keys", "peer_id": peer.config.peer_id})
        if not result.initiator:
            # our first frame on the new keys lets the initiator switch to them
            self.datapath.send_keepalive(peer)
