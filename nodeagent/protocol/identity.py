"""Node identity: the peer id of an ML-DSA-87 public key, and key-size checks. Pure."""

from __future__ import annotations

import hashlib
import re

from .constants import MLDSA87_PUBLIC_KEY_SIZE, PEER_ID_SIZE

__all__ = ["PEER_ID_RE", "IdentityError", "check_public_key", "peer_id", "peer_id_bytes"]

PEER_ID_RE = re.compile(r"^[0-9a-f]{40}\Z")  # \Z: "$" would also match before a final newline


class IdentityError(ValueError):
    """A public key or peer id has the wrong shape."""


def check_public_key(public_key: bytes) -> bytes:
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != MLDSA87_PUBLIC_KEY_SIZE:
        raise IdentityError(f"an ML-DSA-87 public key is {MLDSA87_PUBLIC_KEY_SIZE} bytes")
    return bytes(public_key)


def peer_id_bytes(public_key: bytes) -> bytes:
    """First 20 bytes of SHA-256 of the raw ML-DSA-87 public key (a 160-bit Kademlia key)."""
    return hashlib.sha256(check_public_key(public_key)).digest()[:PEER_ID_SIZE]


def peer_id(public_key: bytes) -> str:
    """The peer id as 40 lowercase hex characters."""
    return peer_id_bytes(public_key).hex()
