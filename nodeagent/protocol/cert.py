"""Mesh certificates: the canonical byte format, issuing and verification. Pure.

meshadmin's CA issues one per enrolled node; agents verify peers offline against the CA public
key they received at enrollment. This module is the only definition of the format.

Layout (all integers big-endian; the signed part, "tbs", is everything before the signature):

    magic       4   b"SMC1"
    version     1   1
    flags       1   bit 0 public, bit 1 relay; other bits must be zero
    not_before  8   unix seconds
    not_after   8   unix seconds, > not_before
    ca_id      20   first 20 bytes of SHA-256 of the CA's ML-DSA-87 public key
    peer_id    20   first 20 bytes of SHA-256 of public_key (checked on parse)
    ip_version  1   4 or 6
    overlay_ip  4|16
    prefix_len  1   the network's prefix length (<= 32 or <= 128)
    name        1+n UTF-8, 1..63 bytes, no control characters
    network     1+n UTF-8, 1..63 bytes, no control characters
    public_key  2+n ML-DSA-87 raw public key, exactly 2592 bytes
    ---
    signature   2+n ML-DSA-87 over tbs with context "shadowmesh/cert/v1", exactly 4627 bytes

Any other length, an unknown flag bit, a bad UTF-8 name or trailing bytes raise
MalformedCertificate. Because ML-DSA signatures are randomized, a certificate's identity for
revocation and fingerprints is its peer id / its tbs bytes, never the signature.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass
from enum import IntFlag

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from .constants import CONTEXT_CERT, MLDSA87_PUBLIC_KEY_SIZE, MLDSA87_SIGNATURE_SIZE
from .identity import peer_id_bytes
from .wire import Reader

__all__ = [
    "MAGIC",
    "BadSignature",
    "CertFlags",
    "Certificate",
    "CertificateError",
    "ExpiredCertificate",
    "MalformedCertificate",
    "UnknownIssuer",
    "ca_id",
    "issue_certificate",
    "parse_certificate",
    "verify_certificate",
]

MAGIC = b"SMC1"
VERSION = 1
MAX_TEXT = 63


class CertificateError(ValueError):
    """Base of every error this module raises."""


class MalformedCertificate(CertificateError):
    pass


class BadSignature(CertificateError):
    pass


class UnknownIssuer(CertificateError):
    pass


class ExpiredCertificate(CertificateError):
    pass


class CertFlags(IntFlag):
    NONE = 0
    PUBLIC = 1
    RELAY = 2


_ALL_FLAGS = int(CertFlags.PUBLIC | CertFlags.RELAY)
_HEAD = struct.Struct("!4sBBQQ")


def ca_id(ca_public_key: bytes) -> bytes:
    """Identifier of a CA: first 20 bytes of SHA-256 of its raw ML-DSA-87 public key."""
    return peer_id_bytes(ca_public_key)


def _text(value: bytes, what: str) -> str:
    if not 1 <= len(value) <= MAX_TEXT:
        raise MalformedCertificate(f"{what} must be 1..{MAX_TEXT} bytes")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedCertificate(f"{what} is not UTF-8") from exc
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        raise MalformedCertificate(f"{what} contains control characters")
    return text


@dataclass(frozen=True, slots=True)
class Certificate:
    """A parsed certificate. `tbs` and `signature` are the exact bytes that were signed."""

    flags: CertFlags
    not_before: int
    not_after: int
    ca_id: bytes
    peer_id: str
    overlay_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    prefix_len: int
    name: str
    network: str
    public_key: bytes
    tbs: bytes
    signature: bytes

    @property
    def is_public(self) -> bool:
        return bool(self.flags & CertFlags.PUBLIC)

    @property
    def is_relay(self) -> bool:
        return bool(self.flags & CertFlags.RELAY)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the signed part (stable across re-signing of identical content)."""
        return hashlib.sha256(self.tbs).hexdigest()

    def to_bytes(self) -> bytes:
        return self.tbs + struct.pack("!H", len(self.signature)) + self.signature


def _encode_tbs(
    *,
    flags: int,
    not_before: int,
    not_after: int,
    issuer: bytes,
    public_key: bytes,
    overlay_ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    prefix_len: int,
    name: str,
    network: str,
) -> bytes:
    if flags & ~_ALL_FLAGS:
        raise MalformedCertificate("unknown flag bits")
    if not 0 <= not_before < not_after < 2**64:
        raise MalformedCertificate("validity must satisfy 0 <= not_before < not_after")
    if len(public_key) != MLDSA87_PUBLIC_KEY_SIZE:
        raise MalformedCertificate("public key must be an ML-DSA-87 key")
    ip = ipaddress.ip_address(overlay_ip)
    if not 0 <= prefix_len <= ip.max_prefixlen:
        raise MalformedCertificate("prefix length out of range")
    name_b = name.encode("utf-8")
    net_b = network.encode("utf-8")
    _text(name_b, "name")
    _text(net_b, "network")
    return b"".join(
        (
            _HEAD.pack(MAGIC, VERSION, flags, not_before, not_after),
            issuer,
            peer_id_bytes(public_key),
            struct.pack("!B", ip.version),
            ip.packed,
            struct.pack("!BB", prefix_len, len(name_b)),
            name_b,
            struct.pack("!B", len(net_b)),
            net_b,
            struct.pack("!H", len(public_key)),
            public_key,
        )
    )


def issue_certificate(
    ca_private_key: mldsa.MLDSA87PrivateKey,
    *,
    public_key: bytes,
    name: str,
    network: str,
    overlay_ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    prefix_len: int,
    flags: int,
    not_before: int,
    not_after: int,
) -> bytes:
    """Sign a certificate with the CA key; returns its canonical bytes."""
    issuer = ca_id(ca_private_key.public_key().public_bytes_raw())
    tbs = _encode_tbs(
        flags=int(flags),
        not_before=not_before,
        not_after=not_after,
        issuer=issuer,
        public_key=bytes(public_key),
        overlay_ip=overlay_ip,
        prefix_len=prefix_len,
        name=name,
        network=network,
    )
    signature = ca_private_key.sign(tbs, CONTEXT_CERT)
    return tbs + struct.pack("!H", len(signature)) + signature


def parse_certificate(data: bytes) -> Certificate:
    """Strictly parse the canonical bytes. Does not check the signature or validity period."""
    r = Reader(data, MalformedCertificate)
    magic, version, flags, not_before, not_after = _HEAD.unpack(r.take(_HEAD.size, "header"))
    if magic != MAGIC:
        raise MalformedCertificate("bad magic")
    if version != VERSION:
        raise MalformedCertificate(f"unsupported version {version}")
    if flags & ~_ALL_FLAGS:
        raise MalformedCertificate("unknown flag bits")
    if not not_before < not_after:
        raise MalformedCertificate("not_after must be later than not_before")
    issuer = r.take(20, "ca id")
    claimed_peer_id = r.take(20, "peer id")
    ip_version = r.u8("ip version")
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    if ip_version == 4:
        ip = ipaddress.IPv4Address(r.take(4, "overlay ip"))
    elif ip_version == 6:
        ip = ipaddress.IPv6Address(r.take(16, "overlay ip"))
    else:
        raise MalformedCertificate("ip version must be 4 or 6")
    prefix_len = r.u8("prefix length")
    if prefix_len > ip.max_prefixlen:
        raise MalformedCertificate("prefix length out of range")
    name = _text(r.prefixed8("name"), "name")
    network = _text(r.prefixed8("network"), "network")
    public_key = r.prefixed16("public key")
    if len(public_key) != MLDSA87_PUBLIC_KEY_SIZE:
        raise MalformedCertificate("public key must be an ML-DSA-87 key")
    if peer_id_bytes(public_key) != claimed_peer_id:
        raise MalformedCertificate("peer id does not match the public key")
    tbs_end = r.position
    signature = r.prefixed16("signature")
    if len(signature) != MLDSA87_SIGNATURE_SIZE:
        raise MalformedCertificate("signature must be an ML-DSA-87 signature")
    r.end()
    raw = bytes(data)
    return Certificate(
        flags=CertFlags(flags),
        not_before=not_before,
        not_after=not_after,
        ca_id=issuer,
        peer_id=claimed_peer_id.hex(),
        overlay_ip=ip,
        prefix_len=prefix_len,
        name=name,
        network=network,
        public_key=public_key,
        tbs=raw[:tbs_end],
        signature=signature,
    )


def verify_certificate(data: bytes, ca_public_key: bytes, now: int) -> Certificate:
    """Parse, check the issuer and signature, then the validity period at `now` (unix seconds)."""
    cert = parse_certificate(data)
    if cert.ca_id != ca_id(ca_public_key):
        raise UnknownIssuer("certificate was issued by another CA")
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(ca_public_key).verify(
            cert.signature, cert.tbs, CONTEXT_CERT
        )
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature("certificate signature does not verify") from exc
    if not cert.not_before <= now < cert.not_after:
        raise ExpiredCertificate("certificate is outside its validity period")
    return cert
