"""Events the pure per-peer session machine (session.py) emits for the agent to act on."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .keys import Keypair

__all__ = [
    "Event",
    "HandshakeGaveUp",
    "HandshakeReason",
    "HandshakeTimedOut",
    "KeysExpired",
    "SendKeepalive",
    "StartHandshake",
]


class HandshakeReason(enum.Enum):
    NO_KEYS = "no_keys"  # something to send and no usable keypair
    REKEY = "rekey"  # our keypair reached REKEY_AFTER_TIME (we initiated it) or REKEY_AFTER_MESSAGES
    NO_REPLY = "no_reply"  # we sent data and heard nothing for KEEPALIVE + REKEY_TIMEOUT (15 s)
    RETRY = "retry"  # the previous attempt got no answer within REKEY_TIMEOUT (+ jitter)


@dataclass(frozen=True, slots=True)
class StartHandshake:
    """Begin a handshake attempt (as initiator) with this peer now."""

    peer_id: str
    reason: HandshakeReason
    attempt: int  # 1 for the first attempt of a series


@dataclass(frozen=True, slots=True)
class HandshakeTimedOut:
    """The attempt in flight got no answer in time: abandon it (a retry follows, or a give-up)."""

    peer_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    """REKEY_ATTEMPT_TIME (90 s) of attempts failed: drop queued packets, stop until new demand."""

    peer_id: str
    attempts: int


@dataclass(frozen=True, slots=True)
class SendKeepalive:
    peer_id: str


@dataclass(frozen=True, slots=True)
class KeysExpired:
    """These keypairs reached REJECT_AFTER_TIME and were wiped: forget their receiver indices."""

    peer_id: str
    keypairs: tuple[Keypair, ...]


Event = StartHandshake | HandshakeTimedOut | HandshakeGaveUp | SendKeepalive | KeysExpired
