"""The errors of the peer handshake: `HandshakeError` and its kinds. Pure.

One family for the whole handshake, raised by handshake.py (messages, keys, signatures),
trust.py (credentials, revocation) and hello_guard.py (HELLO replay and flood), so a caller
catches `HandshakeError` once whichever of them refused.
"""

from __future__ import annotations

__all__ = [
    "BadCredential",
    "BadShare",
    "BadSignature",
    "HandshakeError",
    "HandshakeFlood",
    "HandshakeStateError",
    "KeyConfirmationFailed",
    "MalformedHandshake",
    "ReplayedHello",
    "RevokedPeer",
    "UnknownPeer",
    "VersionMismatch",
    "WrongAddress",
    "WrongPeer",
    "reason",
]


class HandshakeError(ValueError):
    """Base of every error this module raises for bad input or misuse."""


class MalformedHandshake(HandshakeError):
    pass


class VersionMismatch(HandshakeError):
    """Another protocol version or suite (including any classical-only offer)."""


class UnknownPeer(HandshakeError):
    """The claimed peer id is not one we may talk to (refused before any asymmetric work).
    `peer_id`, when set, is the id a HELLO claimed: nothing has authenticated it."""

    def __init__(self, *args: object, peer_id: str | None = None) -> None:
        super().__init__(*args)
        self.peer_id = peer_id


class WrongPeer(HandshakeError):
    """The peer is not the one expected (or the message was addressed to someone else)."""


class RevokedPeer(HandshakeError):
    pass


class WrongAddress(HandshakeError):
    """The certificate's overlay address is not the one the netmap gives that peer."""


class ReplayedHello(HandshakeError):
    pass


class HandshakeFlood(HandshakeError):
    pass


class BadShare(HandshakeError):
    """A low-order / all-zero X25519 share or an invalid ML-KEM key."""


class KeyConfirmationFailed(HandshakeError):
    pass


class BadSignature(HandshakeError):
    pass


class BadCredential(HandshakeError):
    """The credential does not authenticate (bad certificate, not the pinned key...)."""


class HandshakeStateError(HandshakeError):
    """A method was called out of order, or after the handshake failed or finished."""


def reason(exc: HandshakeError) -> str:
    """The error's kind as a counter name in snake case: ReplayedHello -> "replayed_hello"."""
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
