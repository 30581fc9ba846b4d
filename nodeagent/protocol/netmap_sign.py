"""Netmap signatures: the network's CA signs every netmap and delta the server sends. Pure.

The netmap defines an agent's peers, the routes (the inner source addresses each peer may use)
and the revocation list, so an agent applies nothing the network's CA did not sign. The agent
holds the CA public key from enrollment; the server signs with the CA key itself, under its own
FIPS 204 context, so a netmap signature can never pass as a certificate (or anything else):

    signature = ML-DSA-87.Sign(CA key, label ‖ 0x00 ‖ body, context = "shadowmesh/netmap/v1")

`body` is the exact bytes on the wire (the msgpack of the plain-data NetMap or NetMapDelta,
messages.py), and `label` is "netmap" or "delta", so a delta's signature is never a full map's.
The body names the network, the serials and, for a full map, the node it is for; the receiver
checks those against its own state after the signature (server_link.py).

`SignedChain` is the persisted form (the agent's netmap.json): the last signed full map and the
signed deltas applied on top of it, each kept as received, so the file is verified again at load.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from .constants import CONTEXT_NETMAP, MLDSA87_SIGNATURE_SIZE, CloseCode
from .strict import MessageError

__all__ = [
    "CHAIN_FORMAT",
    "LABEL_DELTA",
    "LABEL_FULL",
    "BadNetmapSignature",
    "SignedChain",
    "SignedPart",
    "chain_from_dict",
    "chain_to_dict",
    "sign",
    "signed_message",
    "verify",
]

LABEL_FULL = b"netmap"
LABEL_DELTA = b"delta"
CHAIN_FORMAT = "shadowmesh-signed-netmap/1"


class BadNetmapSignature(MessageError):
    """A netmap or delta not signed by the network's CA. Nothing of it may be used."""

    code = CloseCode.BAD_SIGNATURE


def signed_message(label: bytes, body: bytes) -> bytes:
    if label not in (LABEL_FULL, LABEL_DELTA):
        raise ValueError(f"unknown netmap label {label!r}")
    return label + b"\x00" + bytes(body)


def sign(ca_private_key: mldsa.MLDSA87PrivateKey, label: bytes, body: bytes) -> bytes:
    return ca_private_key.sign(signed_message(label, body), CONTEXT_NETMAP)


def verify(ca_public_key: bytes, label: bytes, body: bytes, signature: bytes) -> None:
    """Raise BadNetmapSignature unless `signature` is the CA's over this label and body."""
    if len(signature) != MLDSA87_SIGNATURE_SIZE:
        raise BadNetmapSignature(f"{label.decode()} signature has the wrong length")
    try:
        key = mldsa.MLDSA87PublicKey.from_public_bytes(bytes(ca_public_key))
        key.verify(bytes(signature), signed_message(label, body), CONTEXT_NETMAP)
    except (InvalidSignature, ValueError):
        raise BadNetmapSignature(f"{label.decode()} is not signed by this network's CA") from None


@dataclass(frozen=True, slots=True)
class SignedPart:
    label: bytes
    body: bytes
    signature: bytes

    def verify(self, ca_public_key: bytes) -> None:
        verify(ca_public_key, self.label, self.body, self.signature)


@dataclass(frozen=True, slots=True)
class SignedChain:
    """A signed full map and the signed deltas applied on it, oldest first."""

    full: SignedPart
    deltas: tuple[SignedPart, ...] = ()

    def verify(self, ca_public_key: bytes) -> None:
        if self.full.label != LABEL_FULL or any(d.label != LABEL_DELTA for d in self.deltas):
            raise BadNetmapSignature("a chain is one full map followed by deltas")
        self.full.verify(ca_public_key)
        for d in self.deltas:
            d.verify(ca_public_key)


def _b64(part: SignedPart) -> dict[str, str]:
    return {"body": base64.b64encode(part.body).decode("ascii"),
            "sig": base64.b64encode(part.signature).decode("ascii")}


def chain_to_dict(chain: SignedChain) -> dict[str, object]:
    """Plain data for JSON: base64 of each body and signature, as received."""
    return {"format": CHAIN_FORMAT, "netmap": _b64(chain.full), "deltas": [_b64(d) for d in chain.deltas]}


def _part(value: object, label: bytes) -> SignedPart:
    if not isinstance(value, dict) or set(value) != {"body", "sig"}:
        raise ValueError("each signed part is {body, sig}")
    try:
        body = base64.b64decode(value["body"], validate=True)
        sig = base64.b64decode(value["sig"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ValueError("a signed part is not base64") from None
    return SignedPart(label, body, sig)


def chain_from_dict(value: object) -> SignedChain:
    """The chain from its JSON form (shape only: call `verify` before using it)."""
    if not isinstance(value, dict) or value.get("format") != CHAIN_FORMAT:
        raise ValueError(f"not a {CHAIN_FORMAT} document (an unsigned map of an older agent?)")
    if set(value) != {"format", "netmap", "deltas"} or not isinstance(value["deltas"], list):
        raise ValueError("a signed netmap document has format, netmap and deltas")
    return SignedChain(_part(value["netmap"], LABEL_FULL),
                       tuple(_part(d, LABEL_DELTA) for d in value["deltas"]))
