"""Per-peer session timers: WireGuard's timers.go as a pure state machine. No I/O, no clock.

Scope (agreed split with the I/O side): the per-datagram receive and send paths live in
tunnel/datapath.py, which calls frames/keys directly for speed. This machine owns everything
that is driven by TIME for one peer, and tells the agent what to do through events.py:

    inputs                                  what it schedules
    need_keys(now, reason)                  StartHandshake now, or when the 5 s rate limit allows
    handshake_completed(now, kp, confirmed) installs into the KeyRing; clears the attempt series
    keys_installed(now)                     the same, when the I/O side installed into the shared ring
    handshake_failed(now)                   the attempt ended early; the retry keeps its time
    handshake_unsent(now)                   the attempt could not leave (no path to the peer yet)
    path_up(now) -> [events]                a path appeared: an unsent attempt starts again now
    on_sent(now) / on_data_sent(now)        keepalive clock; arms the no-reply check
    on_received(now)                        disarms the no-reply check
    handle_timer(now) -> [events]           everything due at `now`
    next_deadline() -> float | None         when to call handle_timer next

Timers (constants.py, WireGuard's numbers; Limits lowers the key ones for tests):
- handshake attempts: at most one per REKEY_TIMEOUT (5 s) plus a jitter of up to 334 ms drawn
  by the `jitter` callable passed in; an attempt without a result by then → HandshakeTimedOut
  then a RETRY StartHandshake; after REKEY_ATTEMPT_TIME (90 s) of a series → HandshakeGaveUp and
  silence until the next need_keys();
- rekey: the INITIATOR of the current keypair starts a new handshake when it is
  REKEY_AFTER_TIME (120 s) old (the responder rekeys only on demand, when its keys become
  unusable) so the two sides do not race each other;
- keepalive: SendKeepalive when the session has a usable keypair and nothing was sent for
  `keepalive_s` (10 s by default, docs/protocol.md#key-lifetimes-and-timers), which also keeps
  NAT mappings open;
- no reply: data sent and nothing received for KEEPALIVE + REKEY_TIMEOUT (15 s) → NO_REPLY
  (KEEPALIVE is `keepalive_s` when that is longer than 10 s: the peer's keepalives come no more
  often, so a quiet but healthy peer is not taken for a dead one);
- an attempt that could not even leave (no control link, no hub link) is marked with
  handshake_unsent(): it counts for the retry and give-up clocks, and path_up() starts it again
  at once when the path appears instead of waiting for the retry;
- expiry: KeyRing.expire at REJECT_AFTER_TIME (180 s), or when the peer's certificate ends
  (Keypair.ends_at), wipes a keypair → KeysExpired. (WireGuard
  keeps unusable keys until ZERO_AFTER_TIME, 540 s; we erase them at 180 s, so no separate zero
  timer is needed. The handshake objects' ephemeral secrets are dropped when they finish/fail.)

`now` is the agent's monotonic clock in seconds (the same clock for every call).
"""

from __future__ import annotations

from collections.abc import Callable

from .constants import KEEPALIVE_S, KEEPALIVE_TIMEOUT_S, REKEY_ATTEMPT_TIME_S, REKEY_TIMEOUT_S
from .events import (
    Event,
    HandshakeGaveUp,
    HandshakeReason,
    HandshakeTimedOut,
    KeysExpired,
    SendKeepalive,
    StartHandshake,
)
from .keys import DEFAULT_LIMITS, Keypair, KeyRing, Limits

__all__ = ["PeerSession"]


def _no_jitter() -> float:
    return 0.0


class PeerSession:
    def __init__(
        self,
        peer_id: str,
        *,
        ring: KeyRing | None = None,
        limits: Limits = DEFAULT_LIMITS,
        keepalive_s: float = KEEPALIVE_S,
        rekey_timeout_s: float = REKEY_TIMEOUT_S,
        rekey_attempt_time_s: float = REKEY_ATTEMPT_TIME_S,
        jitter: Callable[[], float] = _no_jitter,
    ) -> None:
        self.peer_id = peer_id
        self.ring = ring if ring is not None else KeyRing()
        self.limits = limits
        self.keepalive_s = keepalive_s
        self.rekey_timeout_s = rekey_timeout_s
        self.rekey_attempt_time_s = rekey_attempt_time_s
        self._jitter = jitter
        # handshake attempt series
        self.attempts = 0
        self._series_started: float | None = None
        self._last_attempt: float | None = None
        self._retry_at: float | None = None  # when the attempt in flight times out
        self._deferred: HandshakeReason | None = None  # demand waiting for the rate limit
        self._unsent = False  # the attempt in flight never left: no path to the peer
        # traffic clocks
        self.last_sent: float | None = None
        self.last_received: float | None = None
        self.last_handshake: float | None = None
        self._no_reply_at: float | None = None

    # --- state

    @property
    def handshaking(self) -> bool:
        return self._series_started is not None

    def _earliest_attempt(self) -> float | None:
        if self._last_attempt is None:
            return None
        return self._last_attempt + self.rekey_timeout_s

    def _start(self, now: float, reason: HandshakeReason) -> StartHandshake:
        if self._series_started is None:
            self._series_started = now
            self.attempts = 0
        self.attempts += 1
        self._last_attempt = now
        self._retry_at = now + self.rekey_timeout_s + max(0.0, self._jitter())
        self._deferred = None
        self._unsent = False
        return StartHandshake(self.peer_id, reason, self.attempts)

    # --- inputs

    def need_keys(self, now: float, reason: HandshakeReason = HandshakeReason.NO_KEYS) -> list[Event]:
        """The data path needs a (new) keypair. Starts an attempt unless one runs or the rate limit holds."""
        if self.handshaking:
            return []
        if reason is HandshakeReason.REKEY and self.ring.next is not None and self.ring.next.usable(now):
            return []  # a fresh keypair already waits for the peer's first frame
        earliest = self._earliest_attempt()
        if earliest is not None and now < earliest:
            if self._deferred is None:
                self._deferred = reason
            return []
        return [self._start(now, reason)]

    def handshake_completed(self, now: float, keypair: Keypair, *, confirmed: bool) -> list[Keypair]:
        """Install the new keypair; returns the keypairs that left the ring (already wiped)."""
        dropped = self.ring.install(keypair, confirmed=confirmed, now=now)
        self.keys_installed(now)
        return dropped

    def keys_installed(self, now: float) -> None:
        """A handshake's keypair was installed into this session's ring by the I/O side (the
        agent's data path shares the ring and also indexes the keypair): end the attempt series."""
        self._series_started = None
        self._retry_at = None
        self._deferred = None
        self._unsent = False
        self.attempts = 0
        self.last_handshake = now

    def handshake_failed(self, now: float) -> None:
        """The attempt in flight ended without keys (refused, connection lost...).

        The retry still waits for its deadline, so a peer that refuses at once is tried at most
        once per REKEY_TIMEOUT.
        """

    def handshake_unsent(self, now: float) -> None:
        """The attempt just started could not leave: there is no path to the peer yet.

        The retry and give-up clocks run on as for a lost attempt; path_up() restarts it sooner.
        """
        if self.handshaking:
            self._unsent = True

    def path_up(self, now: float) -> list[Event]:
        """A path to the peer appeared (a control link, or the link to its relay hub). An attempt
        that could not leave is started again at once; anything else waits for its timers."""
        if self.handshaking and self._unsent:
            return [self._start(now, HandshakeReason.RETRY)]
        return []

    def on_sent(self, now: float) -> None:
        """Any authenticated frame (data or keepalive) was sent to this peer."""
        self.last_sent = now

    def on_data_sent(self, now: float) -> None:
        """A DATA frame (or an echo keepalive, which asks for an answer) was sent: expect to hear
        back within KEEPALIVE + REKEY_TIMEOUT. Only the first unanswered send arms the check."""
        self.last_sent = now
        if self._no_reply_at is None:
            self._no_reply_at = now + max(KEEPALIVE_TIMEOUT_S, self.keepalive_s) + self.rekey_timeout_s

    def on_received(self, now: float) -> None:
        """Any authenticated frame arrived from this peer."""
        self.last_received = now
        self._no_reply_at = None

    # --- timers

    def _rekey_at(self) -> float | None:
        cur = self.ring.current
        if cur is None or not cur.initiator or cur.wiped or self.ring.next is not None:
            return None
        return cur.created_at + self.limits.rekey_after_time

    def _keepalive_at(self) -> float | None:
        if self.ring.current is None or self.ring.current.wiped:
            return None
        base = self.last_sent if self.last_sent is not None else self.ring.current.created_at
        return base + self.keepalive_s

    def next_deadline(self) -> float | None:
        candidates = [self.ring.next_expiry(), self._keepalive_at(), self._no_reply_at]
        if self.handshaking:
            candidates.append(self._retry_at)
        else:
            candidates.append(self._rekey_at())
            if self._deferred is not None:
                candidates.append(self._earliest_attempt())
        times = [t for t in candidates if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        # 1. expire unusable keypairs (and promote a `next` that waited too long)
        expired = self.ring.expire(now)
        if expired:
            events.append(KeysExpired(self.peer_id, tuple(expired)))
        # 2. the handshake in flight timed out: retry, or give up after REKEY_ATTEMPT_TIME
        if self.handshaking and self._retry_at is not None and now >= self._retry_at:
            events.append(HandshakeTimedOut(self.peer_id, self.attempts))
            assert self._series_started is not None
            if now - self._series_started >= self.rekey_attempt_time_s:
                events.append(HandshakeGaveUp(self.peer_id, self.attempts))
                self._series_started = None
                self._retry_at = None
                self.attempts = 0
            else:
                events.append(self._start(now, HandshakeReason.RETRY))
        # 3. demand that waited for the rate limit; time-based rekey; no reply
        if not self.handshaking:
            earliest = self._earliest_attempt()
            rekey_at = self._rekey_at()
            if self._deferred is not None and (earliest is None or now >= earliest):
                events.append(self._start(now, self._deferred))
            elif rekey_at is not None and now >= rekey_at:
                events += self.need_keys(now, HandshakeReason.REKEY)
        if self._no_reply_at is not None and now >= self._no_reply_at:
            self._no_reply_at = None
            if not self.handshaking:
                events += self.need_keys(now, HandshakeReason.NO_REPLY)
        # 4. keepalive
        keepalive_at = self._keepalive_at()
        if keepalive_at is not None and now >= keepalive_at and self.ring.sending(now) is not None:
            self.last_sent = now
            events.append(SendKeepalive(self.peer_id))
        return events
