"""Key schedule: one session keypair and the previous/current/next ring, per WireGuard. Pure.

API note: KeyRing.install(keypair, confirmed=..., now=...) re-stamps keypair.created_at = now, so
lifetimes run on the caller's (monotonic) clock even though the handshake used wall-clock time.

A `Keypair` is what a completed handshake yields for the data path: a send and a receive
ChaCha20-Poly1305 key, both session indices, a send counter and a replay window. Time is
always an argument (`now`, seconds on any monotonic clock).

Lifetimes (constants.py, injectable through `Limits` so tests can lower them):
- the sender rekeys after REKEY_AFTER_MESSAGES, and the initiator of a keypair after
  REKEY_AFTER_TIME (120 s) on send / REKEY_AFTER_TIME_RECEIVING (165 s) on receive;
- a keypair is unusable at REJECT_AFTER_TIME (180 s) or once its counter reaches
  REJECT_AFTER_MESSAGES; `KeyRing.expire` then wipes it at once (stricter than WireGuard, which
  keeps unusable keys until 540 s; ZERO_AFTER_TIME is left to the session for handshake state).

Ring rotation (why `next` exists): our handshake has three messages, so the responder holds
confirmed keys as soon as CONFIRM arrives and installs them as current (`confirmed=True`), then
sends a frame on them. The initiator installs its new keypair as `next` and keeps sending on
current until the first authenticated frame arrives on `next` (`KeyRing.received`), so no
frame is sealed under keys the responder does not have yet (the CONFIRM rides TCP, data rides
UDP and can overtake it). With no usable current, or after REKEY_TIMEOUT without that frame,
`next` is promoted anyway. The superseded keypair becomes `previous` for frames in flight.

Erasure: the raw key bytes are kept in bytearrays and zeroed by `wipe()`, which also drops the
AEAD objects; the copies inside OpenSSL's cipher contexts are freed (and cleansed by OpenSSL)
when the last reference goes, which `wipe()` makes happen for the ring's own references.

`next_counter()` is atomic under the GIL (itertools.count), so concurrent senders never share
a nonce; it raises NonceExhausted at the reject limit.

Disco keys (`Keypair.disco`, `DiscoKeys`): the path-discovery frames (PROBE, PROBE_ACK, CALL:
disco.py) are sealed under keys derived from the keypair's own (HKDF-SHA-256, no salt, info
DISCO_KEY_LABEL; docs/protocol.md#path-discovery-frames), with their own counter and replay
window. A probe sent to an address that never answers then leaves no gap in the data counters
(the receiver's loss count stays the data path's), and a probe cannot be replayed either.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .constants import (
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME_S,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME_RECEIVING_S,
    REKEY_AFTER_TIME_S,
    REKEY_TIMEOUT_S,
    ZERO_AFTER_TIME_S,
)
from .replay import ReplayWindow

__all__ = ["DEFAULT_LIMITS", "DISCO_KEY_LABEL", "KEY_SIZE", "DiscoKeys", "KeyRing", "Keypair", "KeysError",
           "Limits", "NonceExhausted", "derive_disco_key"]

KEY_SIZE = 32
DISCO_KEY_LABEL = b"shadowmesh/disco/v1"


class KeysError(ValueError):
    """Base of this module's errors."""


class NonceExhausted(KeysError):
    """The keypair reached the reject-after-messages counter (or was wiped); rekey first."""


@dataclass(frozen=True, slots=True)
class Limits:
    rekey_after_messages: int = REKEY_AFTER_MESSAGES
    reject_after_messages: int = REJECT_AFTER_MESSAGES
    rekey_after_time: float = REKEY_AFTER_TIME_S
    rekey_after_time_receiving: float = REKEY_AFTER_TIME_RECEIVING_S
    reject_after_time: float = REJECT_AFTER_TIME_S
    zero_after_time: float = ZERO_AFTER_TIME_S
    next_promote_after: float = REKEY_TIMEOUT_S

    def __post_init__(self) -> None:
        if not 0 < self.rekey_after_messages <= self.reject_after_messages <= REJECT_AFTER_MESSAGES:
            raise KeysError("need 0 < rekey_after_messages <= reject_after_messages <= the spec limit")
        if not 0 < self.rekey_after_time <= self.rekey_after_time_receiving <= self.reject_after_time:
            raise KeysError("need 0 < rekey_after_time <= rekey_after_time_receiving <= reject_after_time")
        if self.zero_after_time < self.reject_after_time:
            raise KeysError("zero_after_time must not be shorter than reject_after_time")


DEFAULT_LIMITS = Limits()


def derive_disco_key(key: bytes) -> bytes:
    """The disco key that goes with one direction's data key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=DISCO_KEY_LABEL)
    return hkdf.derive(bytes(key))


class DiscoKeys:
    """The path-discovery keys of one keypair: own AEADs, counter and replay window."""

    __slots__ = ("_counter", "limit", "recv", "replay", "send")

    def __init__(self, send_key: bytes, recv_key: bytes, limit: int) -> None:
        self.send: ChaCha20Poly1305 | None = ChaCha20Poly1305(derive_disco_key(send_key))
        self.recv: ChaCha20Poly1305 | None = ChaCha20Poly1305(derive_disco_key(recv_key))
        self.replay = ReplayWindow()
        self.limit = limit
        self._counter = itertools.count()

    def next_counter(self) -> int:
        c = next(self._counter)
        if c >= self.limit or self.send is None:
            raise NonceExhausted("disco keys used up or wiped: rekey")
        return c

    def accept(self, counter: int) -> bool:
        """Replay check for a disco frame whose tag ALREADY verified under `recv`; records it."""
        return self.replay.check(counter, self.limit)

    def wipe(self) -> None:
        self.send = self.recv = None
        self._counter = itertools.count(self.limit)
        self.replay.reset()


class Keypair:
    """Data-path keys of one session in one direction pair."""

    __slots__ = (
        "_counter",
        "_keys",
        "_sent",
        "created_at",
        "disco",
        "ends_at",
        "initiator",
        "limits",
        "local_index",
        "recv",
        "remote_index",
        "replay",
        "send",
    )

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        *,
        local_index: int,
        remote_index: int,
        created_at: float,
        initiator: bool,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if len(send_key) != KEY_SIZE or len(recv_key) != KEY_SIZE:
            raise KeysError(f"keys are {KEY_SIZE} bytes")
        if not (0 <= local_index < 2**32 and 0 <= remote_index < 2**32):
            raise KeysError("session indices are 32-bit unsigned")
        self._keys = (bytearray(send_key), bytearray(recv_key))
        self.send: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(send_key))
        self.recv: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(recv_key))
        self.local_index = local_index
        self.remote_index = remote_index
        self.created_at = created_at
        # the end of the peer's certificate on the same clock as created_at (Handshakes.install):
        # keys made with a certificate never outlive it; None: no end (a pinned key)
        self.ends_at: float | None = None
        self.initiator = initiator
        self.limits = limits
        self.replay = ReplayWindow()
        self._counter = itertools.count()
        self._sent = 0
        self.disco = DiscoKeys(send_key, recv_key, limits.reject_after_messages)

    def __repr__(self) -> str:
        return (
            f"<Keypair local={self.local_index:#010x} remote={self.remote_index:#010x} "
            f"{'initiator' if self.initiator else 'responder'} sent={self._sent}"
            f"{' wiped' if self.wiped else ''}>"
        )

    # --- sending

    def next_counter(self) -> int:
        """A fresh counter (nonce) for the next frame; raises NonceExhausted at the limit."""
        c = next(self._counter)
        if c >= self.limits.reject_after_messages:
            raise NonceExhausted("keypair used up: rekey")
        self._sent = c + 1
        return c

    @property
    def sent(self) -> int:
        """How many counters were handed out (approximate under concurrent senders)."""
        return self._sent

    # --- receiving

    def accept(self, counter: int) -> bool:
        """Replay check for a frame whose tag ALREADY verified under `recv`; records it."""
        return self.replay.check(counter, self.limits.reject_after_messages)

    # --- lifetime

    def age(self, now: float) -> float:
        return now - self.created_at

    def usable(self, now: float) -> bool:
        """May still send and receive: not wiped, younger than reject-after-time, counter below
        limit, and the peer's certificate not yet ended."""
        return (
            self.send is not None
            and now - self.created_at < self.limits.reject_after_time
            and self._sent < self.limits.reject_after_messages
            and (self.ends_at is None or now < self.ends_at)
        )

    def wants_rekey_sending(self, now: float) -> bool:
        """WireGuard's keep-key-fresh-sending: counter past rekey, or initiator and older than 120 s."""
        return self._sent >= self.limits.rekey_after_messages or (
            self.initiator and now - self.created_at >= self.limits.rekey_after_time
        )

    def wants_rekey_receiving(self, now: float) -> bool:
        """WireGuard's keep-key-fresh-receiving: initiator and older than 165 s."""
        return self.initiator and now - self.created_at >= self.limits.rekey_after_time_receiving

    @property
    def wiped(self) -> bool:
        return self.send is None

    def wipe(self) -> None:
        """Zero the raw keys and drop the AEAD objects; further sends raise NonceExhausted."""
        for k in self._keys:
            k[:] = bytes(len(k))
        self.send = None
        self.recv = None
        self._counter = itertools.count(self.limits.reject_after_messages)
        self.replay.reset()
        self.disco.wipe()

    def key_bytes(self) -> tuple[bytes, bytes]:
        """(send, recv) raw keys, for tests and key-confirmation; all zeros after wipe()."""
        return bytes(self._keys[0]), bytes(self._keys[1])


class KeyRing:
    """previous / current / next keypairs of one peer (see the module docstring)."""

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def keypairs(self) -> list[Keypair]:
        return [kp for kp in (self.current, self.previous, self.next) if kp is not None]

    def lookup(self, local_index: int) -> Keypair | None:
        for kp in (self.current, self.previous, self.next):
            if kp is not None and kp.local_index == local_index:
                return kp
        return None

    def install(self, keypair: Keypair, *, confirmed: bool, now: float) -> list[Keypair]:
        """Add a new keypair; returns the keypairs that left the ring (already wiped).

        confirmed=True (we are the responder and CONFIRM arrived): it becomes current at once.
        confirmed=False (we are the initiator): it waits in `next` unless nothing usable is current.
        The keypair's life starts now: created_at is re-stamped with `now` (the session's clock).
        """
        keypair.created_at = now
        dropped: list[Keypair] = []
        if confirmed or self.current is None or not self.current.usable(now):
            if self.next is not None:
                dropped.append(self.next)
                self.next = None
            if self.previous is not None:
                dropped.append(self.previous)
            self.previous = self.current
            self.current = keypair
        else:
            if self.next is not None:
                dropped.append(self.next)
            self.next = keypair
        for kp in dropped:
            kp.wipe()
        return dropped

    def received(self, keypair: Keypair) -> bool:
        """An authenticated frame arrived on `keypair`; if it is `next`, rotate. Returns True then."""
        if keypair is not self.next:
            return False
        self._promote_next()
        return True

    def _promote_next(self) -> None:
        if self.previous is not None:
            self.previous.wipe()
        self.previous = self.current
        self.current = self.next
        self.next = None

    def sending(self, now: float) -> Keypair | None:
        """The keypair to seal with now, or None (then a handshake is needed)."""
        cur = self.current
        if cur is not None and cur.usable(now):
            return cur
        nxt = self.next
        if nxt is not None and nxt.usable(now):
            self._promote_next()
            return nxt
        return None

    def expire(self, now: float) -> list[Keypair]:
        """Wipe and drop unusable keypairs; promote a `next` that waited too long. Returns the dropped."""
        nxt = self.next
        if nxt is not None and nxt.usable(now) and (
            self.current is None
            or not self.current.usable(now)
            or now - nxt.created_at >= nxt.limits.next_promote_after
        ):
            self._promote_next()
        dropped = []
        for name in ("previous", "current", "next"):
            kp = getattr(self, name)
            if kp is not None and not kp.usable(now):
                kp.wipe()
                dropped.append(kp)
                setattr(self, name, None)
        return dropped

    def next_expiry(self) -> float | None:
        """Earliest time at which expire() has something to do (None when the ring is empty)."""
        times = [kp.created_at + kp.limits.reject_after_time for kp in self.keypairs()]
        if self.next is not None:
            times.append(self.next.created_at + self.next.limits.next_promote_after)
        return min(times) if times else None

    def wipe_all(self) -> None:
        for kp in self.keypairs():
            kp.wipe()
        self.previous = self.current = self.next = None
