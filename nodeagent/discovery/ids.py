"""DHT identifiers: 160-bit keys, XOR distance, bucket index, derived record keys. Pure.

A node's DHT id is its peer id (first 20 bytes of SHA-256 of its ML-DSA-87 public key, see
nodeagent.protocol.identity), so ids are self-certifying and the CA's enrollment is the only way
to obtain one that other nodes accept. Records are stored under 160-bit keys of the same space:

    node record        key = the node's peer id
    address pointer    key = SHA-256(b"shadowmesh/dht/addr/v1\\0" || packed overlay IP)[:20]
    revocation list    key = SHA-256(b"shadowmesh/dht/revocations/v1\\0" || CA id)[:20]

The labels keep the three derivations apart: no overlay IP can hash to a peer id by design and
finding a collision means breaking SHA-256.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ..protocol.constants import PEER_ID_SIZE
from ..protocol.identity import PEER_ID_RE

__all__ = [
    "ID_BITS",
    "ID_SIZE",
    "IdError",
    "addr_key",
    "bucket_index",
    "distance",
    "id_hex",
    "random_id_in_bucket",
    "revocations_key",
    "to_id",
]

ID_SIZE = PEER_ID_SIZE  # 20 bytes
ID_BITS = ID_SIZE * 8  # 160

_ADDR_LABEL = b"shadowmesh/dht/addr/v1\0"
_REVOCATIONS_LABEL = b"shadowmesh/dht/revocations/v1\0"


class IdError(ValueError):
    """Not a 160-bit id (20 bytes or 40 lowercase hex characters)."""


def to_id(value: bytes | bytearray | str) -> bytes:
    """An id as 20 bytes, from bytes or from 40 lowercase hex characters."""
    if isinstance(value, str):
        if not PEER_ID_RE.match(value):
            raise IdError("an id is 40 lowercase hex characters")
        return bytes.fromhex(value)
    if isinstance(value, bytes | bytearray) and len(value) == ID_SIZE:
        return bytes(value)
    raise IdError(f"an id is {ID_SIZE} bytes")


def id_hex(value: bytes) -> str:
    return to_id(value).hex()


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two ids, as an integer in [0, 2**160)."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own: bytes, other: bytes) -> int:
    """The k-bucket of `other` in the table of `own`: i such that 2**i <= distance < 2**(i+1).

    Bucket 159 holds half of the id space (the first bit differs), bucket 0 a single id.
    Raises IdError for own == other (a node never stores itself)."""
    d = distance(own, other)
    if d == 0:
        raise IdError("a node has no bucket for its own id")
    return d.bit_length() - 1


def random_id_in_bucket(own: bytes, index: int, entropy: bytes) -> bytes:
    """An id in bucket `index` of `own`, its low bits taken from `entropy` (>= 20 random bytes,
    supplied by the caller so this stays pure). Used to refresh a bucket with a lookup."""
    if not 0 <= index < ID_BITS:
        raise IdError(f"bucket index must be 0..{ID_BITS - 1}")
    if len(entropy) < ID_SIZE:
        raise IdError(f"entropy must be at least {ID_SIZE} bytes")
    low = int.from_bytes(entropy[:ID_SIZE], "big") & ((1 << index) - 1)
    d = (1 << index) | low
    return (int.from_bytes(own, "big") ^ d).to_bytes(ID_SIZE, "big")


def addr_key(overlay_ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """The key under which a node's record is also stored, found from its overlay IP."""
    ip = ipaddress.ip_address(overlay_ip)
    return hashlib.sha256(_ADDR_LABEL + ip.packed).digest()[:ID_SIZE]


def revocations_key(ca_id: bytes) -> bytes:
    """The key of the CA's revocation list (one per network CA)."""
    if len(ca_id) != ID_SIZE:
        raise IdError(f"a CA id is {ID_SIZE} bytes")
    return hashlib.sha256(_REVOCATIONS_LABEL + ca_id).digest()[:ID_SIZE]
