"""Session timers: one PeerSession per peer (protocol/session.py) holds the POLICY; this carries it out.

The policy: handshake retry every REKEY_TIMEOUT plus a random jitter, give-up after 90 s,
initiator rekey at 120 s, keepalive after `keepalive_s` without sending, new handshake after
15 s without a reply, key expiry at 180 s. `Sessions` only feeds each session facts and carries
out its events (`_act`):

    facts in                                      events out -> I/O here
    data path needs keys (need_keys)              StartHandshake    -> request_handshake (HELLO)
    keys installed (keys_installed)               HandshakeTimedOut -> forget the Initiator
    HELLO could not leave / CHALLENGE refused     HandshakeGaveUp   -> drop the queued packets
    a path came up (hub_up: a hub link)           SendKeepalive     -> data path echo keepalive
    traffic stamps peer.last_tx / last_rx (tick)  KeysExpired       -> DataPath.sweep (indices)

The session shares the peer's KeyRing with the data path, which installs and rotates keys.
Every housekeeping tick (`tick`): first each session gets the traffic the data path stamped
since the last tick, then `handle_timer(now)`; then an RTT probe goes to every peer with keys
once per `keepalive_s`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from .protocol.constants import (
    REJECT_AFTER_TIME_S,
    REKEY_AFTER_TIME_RECEIVING_S,
    REKEY_TIMEOUT_JITTER_MAX_S,
    REKEY_TIMEOUT_S,
)
from .protocol.events import (
    HandshakeGaveUp,
    HandshakeReason,
    HandshakeTimedOut,
    KeysExpired,
    SendKeepalive,
    StartHandshake,
)
from .protocol.keys import Limits
from .protocol.session import PeerSession
from .tunnel.datapath import DataPath, Peer

__all__ = ["Sessions", "random_jitter", "session_timing"]

log = logging.getLogger(__name__)


def random_jitter() -> float:
    return random.uniform(0.0, REKEY_TIMEOUT_JITTER_MAX_S)


def session_timing(rekey_after_s: float | None) -> tuple[Limits, float]:
    """(key limits, handshake retry period) for a configured `rekey_after_s` (None: the protocol's).

    Handshake attempts happen at most once per REKEY_TIMEOUT; a lowered rekey time (tests)
    lowers it too, or a rekey every 2 s could start only every 5 s."""
    if rekey_after_s is None:
        return Limits(), REKEY_TIMEOUT_S
    limits = Limits(rekey_after_time=rekey_after_s,
                    rekey_after_time_receiving=max(rekey_after_s, REKEY_AFTER_TIME_RECEIVING_S),
                    reject_after_time=REJECT_AFTER_TIME_S)
    return limits, min(REKEY_TIMEOUT_S, rekey_after_s / 2)


class Sessions:
    def __init__(self, peers, datapath: DataPath, *, limits: Limits, keepalive_s: float,
                 rekey_timeout_s: float, jitter: Callable[[], float], clock: Callable[[], float],
                 request_handshake: Callable[[Peer], bool], forget_handshake: Callable[[str], None]) -> None:
        """`peers`: the PeerSet; `jitter()` draws the extra delay of each handshake retry;
        `request_handshake(peer)` sends a HELLO, False if it could not leave;
        `forget_handshake(peer_id)` abandons the attempt in flight (control/handshakes.py)."""
        self.peers = peers
        self.datapath = datapath
        self.limits = limits
        self.keepalive_s = keepalive_s
        self.rekey_timeout_s = rekey_timeout_s
        self.jitter = jitter
        self.clock = clock
        self.request_handshake = request_handshake
        self.forget_handshake = forget_handshake
        self.sessions: dict[str, PeerSession] = {}  # peer id -> its timer machine

    def get(self, peer_id: str) -> PeerSession | None:
        return self.sessions.get(peer_id)

    def _new(self, peer: Peer) -> PeerSession:
        return PeerSession(peer.config.peer_id, ring=peer.ring, limits=self.limits,
                           keepalive_s=self.keepalive_s, rekey_timeout_s=self.rekey_timeout_s,
                           jitter=self.jitter)

    # --- the peer set changed (peers.PeerSet listener) ------------------------------------------
    def peer_added(self, peer: Peer) -> None:
        self.sessions[peer.config.peer_id] = self._new(peer)

    def peer_removed(self, peer: Peer, revoked: bool) -> None:
        self.sessions.pop(peer.config.peer_id, None)

    def peer_changed(self, peer: Peer, old_config, reset_sessions: bool) -> None:
        if reset_sessions:
            self.sessions[peer.config.peer_id] = self._new(peer)  # no timers of the old identity

    # --- facts in -------------------------------------------------------------------------------
    def need_keys(self, peer: Peer) -> None:
        """The data path's callback: `peer` has no usable keys, or its sending keys want a rekey."""
        session = self.sessions.get(peer.config.peer_id)
        if session is None:
            return
        now = self.clock()
        cur = peer.ring.current
        reason = HandshakeReason.REKEY if cur is not None and cur.usable(now) else HandshakeReason.NO_KEYS
        self._act(peer, session.need_keys(now, reason))

    def keys_installed(self, peer: Peer, now: float) -> None:
        session = self.sessions.get(peer.config.peer_id)
        if session is not None:
            session.keys_installed(now)

    def handshake_failed(self, peer: Peer) -> None:
        session = self.sessions.get(peer.config.peer_id)
        if session is not None:
            session.handshake_failed(self.clock())

    def hub_up(self, hub: Peer) -> None:
        """A control link with `hub` came up: start the relayed sessions that go through it."""
        now = self.clock()
        for other in self.peers:
            if other.hub is hub and other.ring.current is None:
                session = self.sessions[other.config.peer_id]
                self._act(other, session.path_up(now) or session.need_keys(now))

    def tick(self, now: float) -> None:
        """Every session: first the traffic the data path stamped since the last tick, then its
        timers. The data path stamps peer.last_tx for any frame it sends (data, echo keepalives
        and their answers, all of which the peer follows with traffic of its own) and
        peer.last_rx for any authenticated frame; in time order, so a reply disarms the
        no-reply check of a send before it. Then the RTT probes."""
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
        self._rtt_probes(now)

    def _rtt_probes(self, now: float) -> None:
        """An echo request to every peer with keys once per keepalive_s, whatever the traffic: the
        session sends keepalives only on idle links, but rtt_ms (status, dashboard) must stay
        fresh under load too. A probe is one small frame per peer and period."""
        period = self.keepalive_s
        for peer in self.peers:
            sent = peer.echo_sent
            if (sent is None or now - sent[1] >= period) and peer.ring.current is not None:
                self.datapath.send_keepalive(peer)

    # --- events out -----------------------------------------------------------------------------
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
                    peer.stats.handshake_timeouts += 1
                    self.forget_handshake(pid)  # a late CHALLENGE for it is ignored
                case HandshakeGaveUp(attempts=attempts):
                    peer.stats.handshake_give_ups += 1
                    dropped = len(peer.pending)
                    peer.pending.clear()
                    log.info("handshake with %s: no keys after %d attempts; gave up (%d queued packets "
                             "dropped) until there is new traffic", peer.config.name, attempts, dropped,
                             extra={"event": "handshake.gave_up", "peer_id": pid})
                case SendKeepalive():
                    session = self.sessions.get(pid)
                    if self.datapath.send_keepalive(peer) and session is not None:
                        session.on_data_sent(peer.last_tx)  # an echo request: the peer answers it
                case KeysExpired(keypairs=keypairs):
                    self.datapath.sweep()  # forget their receiver indices
                    log.debug("session with %s: %d keypair(s) expired", peer.config.name, len(keypairs))
