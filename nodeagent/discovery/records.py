"""Signed DHT records: a node's peer record and the CA's revocation list. Pure.

One envelope, two types. All integers big-endian; the signed part is every byte before the
signature's length field, and it is kept VERBATIM (`raw`, `signed`): a record is never re-encoded
before it is verified, stored or forwarded.

    magic        4   b"SMD1"
    type         1   1 node record, 2 revocation list
    body             (below)
    ---
    signature    2+n ML-DSA-87 over everything above, context "shadowmesh/dht/v1", n = 4627

Node record (type 1), signed by the node's own key (the key in its certificate):

    flags        1   bit 0: public hub (allowed only if the certificate says public); others zero
    peer_id     20   must equal the certificate's peer id: a node publishes only its own record
    sequence     8   higher wins (see next_sequence)
    issued       8   unix seconds
    expires      8   unix seconds, issued < expires <= issued + 24 h
    ip_version   1   4 or 6
    overlay_ip  4|16 must equal the certificate's overlay IP
    count        1   1..8 endpoint candidates, each:
      kind       1     the NAT traversal's candidate kinds (one numbering for both): 1 local
                       (an interface address), 2 observed (as the server saw it), 3 reflexive
                       (as a public hub saw the data port), 5 reported (the endpoint the node
                       advertises: `enroll --endpoint`, its listen or source address); 4
                       (peer-reflexive) is per peer and never published; other values are
                       carried unchanged by nodes that do not know them
      ip_version 1     4 or 6
      ip        4|16   not loopback, unspecified, link-local, multicast or broadcast
      control    2     TCP control port (the DHT answers there too), 1..65535
      udp        2     UDP data port, 1..65535
    certificate  2+n the node's certificate (nodeagent.protocol.cert), issued by the network CA

Revocation list (type 2), signed by the network CA's key (the same key that signs certificates,
with the DHT context, so a certificate signature can never pass for a list or the reverse):

    ca_id       20   first 20 bytes of SHA-256 of the CA public key
    sequence     8   higher wins
    issued       8
    expires      8   issued < expires <= issued + 7 days (it must outlive a server outage)
    count        2   0..1500
    peer ids    20 each, strictly ascending: revoked IDENTITIES (a new certificate for the same
                     key does not undo a revocation)

The type byte is inside the signed bytes and the two types are verified with different keys (the
node's, the CA's), so a node record can never be taken for a revocation list or the reverse.

Validation (`verify_node_record`), cheapest checks first, each failure its own error:
size cap -> strict parse -> time window (issued, expires, lifetime) -> not revoked (by peer id)
-> certificate issued by our CA (by id), for this peer id and overlay IP, public flag allowed,
endpoints sane -> certificate signature and validity at `now` -> record signature.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import itertools
import struct
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from ..protocol import endpoints
from ..protocol.cert import Certificate, CertificateError, ca_id, parse_certificate
from ..protocol.constants import CONTEXT_CERT, CONTEXT_DHT, MLDSA87_SIGNATURE_SIZE
from ..protocol.netmap import Endpoint
from ..protocol.wire import Reader
from .ids import addr_key, revocations_key

__all__ = [
    "KIND_LOCAL",
    "KIND_OBSERVED",
    "KIND_REFLEXIVE",
    "KIND_REPORTED",
    "MAGIC",
    "MAX_CANDIDATES",
    "MAX_NODE_RECORD",
    "MAX_RECORD",
    "MAX_RECORD_LIFETIME_S",
    "MAX_REVOCATION_LIFETIME_S",
    "MAX_REVOKED",
    "BadEndpoint",
    "BadRecordCertificate",
    "BadRecordSignature",
    "Candidate",
    "ExpiredRecord",
    "MalformedRecord",
    "NodeRecord",
    "NotOwner",
    "Record",
    "RecordError",
    "RecordTooLarge",
    "RecordType",
    "RecordVerifier",
    "RevocationList",
    "RevokedNode",
    "Signer",
    "VerifiedDigests",
    "WrongCA",
    "build_node_record",
    "build_revocation_list",
    "check_endpoint",
    "next_sequence",
    "parse_record",
    "verify_node_record",
    "verify_revocation_list",
]

MAGIC = b"SMD1"
MAX_NODE_RECORD = 16 * 1024  # ~12.3 KB in practice: certificate 7.3 KB + signature 4.6 KB
MAX_REVOKED = 1500
MAX_RECORD = 40 * 1024  # any record, i.e. a full revocation list (~34.7 KB)
MAX_CANDIDATES = 8
MAX_RECORD_LIFETIME_S = 24 * 3600
MAX_REVOCATION_LIFETIME_S = 7 * 24 * 3600
MAX_CLOCK_SKEW_S = 300  # a record may be issued this far in our future (clocks differ)

# candidate kinds: the numbers of the NAT traversal's candidate kinds (local 1, observed 2,
# reflexive 3, peer-reflexive 4, configured 5), so a record carries them unchanged
KIND_LOCAL = 1
KIND_OBSERVED = 2
KIND_REFLEXIVE = 3
KIND_REPORTED = 5  # the endpoint the node advertises ("configured" in NAT traversal's terms)
_SOURCES = {KIND_LOCAL: "local", KIND_OBSERVED: "observed", KIND_REFLEXIVE: "reflexive"}

Signer = Callable[[bytes, bytes], bytes]  # (data, context) -> ML-DSA-87 signature


class RecordType(enum.IntEnum):
    NODE = 1
    REVOCATIONS = 2


class RecordError(ValueError):
    """Base of every error this module raises; `reason` is a short stable name for counters."""

    reason = "invalid"


class MalformedRecord(RecordError):
    reason = "malformed"


class RecordTooLarge(RecordError):
    reason = "too_large"


class ExpiredRecord(RecordError):
    reason = "expired"


class RevokedNode(RecordError):
    reason = "revoked"


class WrongCA(RecordError):
    reason = "wrong_ca"


class NotOwner(RecordError):
    """The record names another peer id or overlay IP than its certificate (or claims a flag the
    certificate does not grant)."""

    reason = "not_owner"


class BadEndpoint(RecordError):
    reason = "bad_endpoint"


class BadRecordCertificate(RecordError):
    reason = "bad_certificate"


class BadRecordSignature(RecordError):
    reason = "bad_signature"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Candidate:
    """One endpoint candidate: the netmap's Endpoint shape plus the candidate kind byte.
    (`endpoint.source` is "local", "observed" or "reflexive" for kinds 1-3, else "reported"; the
    kind is the authority.)"""

    endpoint: Endpoint
    kind: int = KIND_REPORTED


@dataclass(frozen=True, slots=True)
class NodeRecord:
    public: bool
    peer_id: str  # 40 hex characters
    sequence: int
    issued: int
    expires: int
    overlay_ip: IPAddress
    candidates: tuple[Candidate, ...]
    certificate: Certificate
    raw: bytes  # the whole record, verbatim
    signed: bytes  # raw without the signature field
    signature: bytes

    @property
    def node_id(self) -> bytes:
        return bytes.fromhex(self.peer_id)

    @property
    def keys(self) -> tuple[bytes, bytes]:
        """The DHT keys this record is stored under: peer id, overlay-IP pointer."""
        return (self.node_id, addr_key(self.overlay_ip))

    @property
    def publisher(self) -> bytes:
        return self.node_id

    @property
    def rank(self) -> tuple[int, int]:
        """Precedence: a newer certificate first (the CA may give a freed overlay IP to another
        node; the later holder wins the address key), then the higher sequence."""
        return (self.certificate.not_before, self.sequence)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(c.endpoint for c in self.candidates)


@dataclass(frozen=True, slots=True)
class RevocationList:
    ca_id: bytes
    sequence: int
    issued: int
    expires: int
    revoked: frozenset[str]  # peer ids, hex
    raw: bytes
    signed: bytes
    signature: bytes

    @property
    def keys(self) -> tuple[bytes]:
        return (revocations_key(self.ca_id),)

    @property
    def publisher(self) -> bytes:
        return self.ca_id

    @property
    def rank(self) -> tuple[int, int]:
        return (0, self.sequence)


Record = NodeRecord | RevocationList

_HEAD = struct.Struct("!4sB")
_NODE_FIXED = struct.Struct("!B20sQQQ")
_LIST_FIXED = struct.Struct("!20sQQQH")
_U16 = struct.Struct("!H")


# --------------------------------------------------------------------------- helpers


def next_sequence(previous: int | None, now: float) -> int:
    """The sequence of a node's next record: milliseconds of the wall clock, and always above the
    previous one, so a restarted node (which forgot its last sequence) still publishes newer
    records as long as its clock does not go back by more than its restart took."""
    return max(0 if previous is None else previous + 1, int(now * 1000))


def check_endpoint(
    ip: str | IPAddress, control_port: int, udp_port: int, *, allow_loopback: bool = False
) -> IPAddress:
    """An endpoint a node may advertise (protocol/endpoints.py, the one endpoint check of the
    project), refused as a record error. `allow_loopback` exists for in-process simulations and
    tests only."""
    try:
        return endpoints.check_endpoint(ip, control_port, udp_port, allow_loopback=allow_loopback)
    except endpoints.BadEndpoint as exc:
        raise BadEndpoint(str(exc)) from None


def _pack_ip(ip: IPAddress) -> bytes:
    return bytes([ip.version]) + ip.packed


def _read_ip(r: Reader, what: str) -> IPAddress:
    version = r.u8(what + " version")
    if version == 4:
        return ipaddress.IPv4Address(r.take(4, what))
    if version == 6:
        return ipaddress.IPv6Address(r.take(16, what))
    raise MalformedRecord(f"{what}: ip version must be 4 or 6")


def _seal(sign: Signer, signed: bytes) -> bytes:
    signature = sign(signed, CONTEXT_DHT)
    if len(signature) != MLDSA87_SIGNATURE_SIZE:
        raise RecordError("the signer did not produce an ML-DSA-87 signature")
    return signed + _U16.pack(len(signature)) + signature


def _check_times(issued: int, expires: int, max_lifetime: int) -> None:
    if not 0 <= issued < expires < 2**64 or expires - issued > max_lifetime:
        raise MalformedRecord(f"validity must satisfy issued < expires <= issued + {max_lifetime} s")


# --------------------------------------------------------------------------- building


def build_node_record(
    sign: Signer,
    *,
    certificate: bytes,
    sequence: int,
    issued: int,
    expires: int,
    candidates: Iterable[Candidate],
    public: bool = False,
    allow_loopback: bool = False,
) -> bytes:
    """A node's own record, signed with `sign` (its ML-DSA-87 key's sign method)."""
    cert = parse_certificate(certificate)
    candidates = tuple(candidates)
    if not 1 <= len(candidates) <= MAX_CANDIDATES:
        raise MalformedRecord(f"a record carries 1..{MAX_CANDIDATES} endpoint candidates")
    if public and not cert.is_public:
        raise NotOwner("the certificate does not make this node a public hub")
    if not 0 <= sequence < 2**64:
        raise MalformedRecord("sequence must fit in 64 bits")
    _check_times(issued, expires, MAX_RECORD_LIFETIME_S)
    parts = [
        _HEAD.pack(MAGIC, RecordType.NODE),
        _NODE_FIXED.pack(1 if public else 0, bytes.fromhex(cert.peer_id), sequence, issued, expires),
        _pack_ip(cert.overlay_ip),
        bytes([len(candidates)]),
    ]
    for c in candidates:
        e = c.endpoint
        if not 0 <= c.kind <= 255:
            raise MalformedRecord("candidate kind must fit in a byte")
        ip = check_endpoint(e.ip, e.control_port, e.udp_port, allow_loopback=allow_loopback)
        parts += [bytes([c.kind]), _pack_ip(ip), struct.pack("!HH", e.control_port, e.udp_port)]
    parts += [_U16.pack(len(certificate)), bytes(certificate)]
    raw = _seal(sign, b"".join(parts))
    if len(raw) > MAX_NODE_RECORD:
        raise RecordTooLarge(f"record is {len(raw)} bytes, the cap is {MAX_NODE_RECORD}")
    return raw


def build_revocation_list(
    sign: Signer,
    *,
    ca_public_key: bytes,
    sequence: int,
    issued: int,
    expires: int,
    revoked: Iterable[str | bytes],
) -> bytes:
    """The CA's revocation list, signed with `sign` (the CA key's sign method; meshadmin already
    holds that key, see meshadmin/mesh/pki.py). Peer ids whose certificates have expired can be
    left out: their certificates no longer verify anyway."""
    ids = sorted({bytes.fromhex(p) if isinstance(p, str) else bytes(p) for p in revoked})
    if any(len(p) != 20 for p in ids):
        raise MalformedRecord("revoked peer ids are 20 bytes (40 hex characters)")
    if len(ids) > MAX_REVOKED:
        raise RecordTooLarge(f"at most {MAX_REVOKED} revoked ids per list")
    if not 0 <= sequence < 2**64:
        raise MalformedRecord("sequence must fit in 64 bits")
    _check_times(issued, expires, MAX_REVOCATION_LIFETIME_S)
    signed = b"".join(
        [
            _HEAD.pack(MAGIC, RecordType.REVOCATIONS),
            _LIST_FIXED.pack(ca_id(ca_public_key), sequence, issued, expires, len(ids)),
            *ids,
        ]
    )
    return _seal(sign, signed)


# --------------------------------------------------------------------------- parsing


def parse_record(raw: bytes) -> Record:
    """Strictly parse either record type. Checks shape only: no signature, time or CA."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedRecord("a record is bytes")
    raw = bytes(raw)
    if len(raw) > MAX_RECORD:
        raise RecordTooLarge(f"record is {len(raw)} bytes, the cap is {MAX_RECORD}")
    r = Reader(raw, MalformedRecord)
    magic, kind = _HEAD.unpack(r.take(_HEAD.size, "header"))
    if magic != MAGIC:
        raise MalformedRecord("bad magic")
    if kind == RecordType.NODE:
        if len(raw) > MAX_NODE_RECORD:
            raise RecordTooLarge(f"node record is {len(raw)} bytes, the cap is {MAX_NODE_RECORD}")
        return _parse_node(r, raw)
    if kind == RecordType.REVOCATIONS:
        return _parse_list(r, raw)
    raise MalformedRecord(f"unknown record type {kind}")


def _signature(r: Reader) -> tuple[int, bytes]:
    end = r.position
    signature = r.prefixed16("signature")
    if len(signature) != MLDSA87_SIGNATURE_SIZE:
        raise MalformedRecord("signature must be an ML-DSA-87 signature")
    r.end()
    return end, signature


def _parse_node(r: Reader, raw: bytes) -> NodeRecord:
    flags, peer_id, sequence, issued, expires = _NODE_FIXED.unpack(r.take(_NODE_FIXED.size, "fixed fields"))
    if flags & ~1:
        raise MalformedRecord("unknown flag bits")
    if not issued < expires:
        raise MalformedRecord("expires must be later than issued")
    overlay_ip = _read_ip(r, "overlay ip")
    count = r.u8("candidate count")
    if not 1 <= count <= MAX_CANDIDATES:
        raise MalformedRecord(f"a record carries 1..{MAX_CANDIDATES} endpoint candidates")
    candidates = []
    for n in range(count):
        kind = r.u8(f"candidate {n} kind")
        ip = _read_ip(r, f"candidate {n} ip")
        control, udp = struct.unpack("!HH", r.take(4, f"candidate {n} ports"))
        source = _SOURCES.get(kind, "reported")
        candidates.append(Candidate(Endpoint(str(ip), control, udp, source), kind))
    cert_bytes = r.prefixed16("certificate")
    try:
        cert = parse_certificate(cert_bytes)
    except CertificateError as exc:
        raise BadRecordCertificate(f"certificate: {exc}") from exc
    end, signature = _signature(r)
    return NodeRecord(
        public=bool(flags & 1),
        peer_id=peer_id.hex(),
        sequence=sequence,
        issued=issued,
        expires=expires,
        overlay_ip=overlay_ip,
        candidates=tuple(candidates),
        certificate=cert,
        raw=raw,
        signed=raw[:end],
        signature=signature,
    )


def _parse_list(r: Reader, raw: bytes) -> RevocationList:
    issuer, sequence, issued, expires, count = _LIST_FIXED.unpack(r.take(_LIST_FIXED.size, "fixed fields"))
    if not issued < expires:
        raise MalformedRecord("expires must be later than issued")
    if count > MAX_REVOKED:
        raise RecordTooLarge(f"at most {MAX_REVOKED} revoked ids per list")
    ids = [r.take(20, f"revoked id {n}") for n in range(count)]
    if any(a >= b for a, b in itertools.pairwise(ids)):
        raise MalformedRecord("revoked ids must be strictly ascending")
    end, signature = _signature(r)
    return RevocationList(
        ca_id=issuer,
        sequence=sequence,
        issued=issued,
        expires=expires,
        revoked=frozenset(p.hex() for p in ids),
        raw=raw,
        signed=raw[:end],
        signature=signature,
    )


# --------------------------------------------------------------------------- verification


def _verify(public_key: bytes, signature: bytes, data: bytes, context: bytes) -> bool:
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(public_key).verify(signature, data, context)
    except (InvalidSignature, ValueError):
        return False
    return True


def _time_checks(issued: int, expires: int, now: float, max_lifetime: int) -> None:
    if expires - issued > max_lifetime:
        raise MalformedRecord(f"a record may live at most {max_lifetime} s")
    if issued > now + MAX_CLOCK_SKEW_S:
        raise ExpiredRecord("record issued in the future")
    if now >= expires:
        raise ExpiredRecord("record has expired")


def _node_cheap_checks(
    rec: NodeRecord, our_ca_id: bytes, now: float, revoked: Collection[str], allow_loopback: bool
) -> None:
    _time_checks(rec.issued, rec.expires, now, MAX_RECORD_LIFETIME_S)
    cert = rec.certificate
    if rec.peer_id in revoked or cert.peer_id in revoked:
        raise RevokedNode(f"node {rec.peer_id[:8]} is revoked")
    if cert.ca_id != our_ca_id:
        raise WrongCA("the record's certificate was issued by another CA")
    if cert.peer_id != rec.peer_id:
        raise NotOwner("the record names another peer id than its certificate")
    if cert.overlay_ip != rec.overlay_ip:
        raise NotOwner("the record names another overlay IP than its certificate")
    if rec.public and not cert.is_public:
        raise NotOwner("the record claims a public hub, the certificate does not")
    if not cert.not_before <= now < cert.not_after:
        raise BadRecordCertificate("the certificate is outside its validity period")
    for c in rec.candidates:
        e = c.endpoint
        check_endpoint(e.ip, e.control_port, e.udp_port, allow_loopback=allow_loopback)


def _node_signatures(rec: NodeRecord, ca_public_key: bytes) -> None:
    cert = rec.certificate
    if not _verify(ca_public_key, cert.signature, cert.tbs, CONTEXT_CERT):
        raise BadRecordCertificate("the certificate's signature does not verify")
    if not _verify(cert.public_key, rec.signature, rec.signed, CONTEXT_DHT):
        raise BadRecordSignature("the record's signature does not verify")


def verify_node_record(
    raw: bytes,
    ca_public_key: bytes,
    now: float,
    *,
    revoked: Collection[str] = (),
    allow_loopback: bool = False,
) -> NodeRecord:
    """Parse and fully validate a node record (see the module docstring for the order)."""
    rec = parse_record(raw)
    if not isinstance(rec, NodeRecord):
        raise MalformedRecord("not a node record")
    _node_cheap_checks(rec, ca_id(ca_public_key), now, revoked, allow_loopback)
    _node_signatures(rec, ca_public_key)
    return rec


def _list_checks(rec: RevocationList, our_ca_id: bytes, now: float) -> None:
    _time_checks(rec.issued, rec.expires, now, MAX_REVOCATION_LIFETIME_S)
    if rec.ca_id != our_ca_id:
        raise WrongCA("the revocation list was issued by another CA")


def verify_revocation_list(raw: bytes, ca_public_key: bytes, now: float) -> RevocationList:
    rec = parse_record(raw)
    if not isinstance(rec, RevocationList):
        raise MalformedRecord("not a revocation list")
    _list_checks(rec, ca_id(ca_public_key), now)
    if not _verify(ca_public_key, rec.signature, rec.signed, CONTEXT_DHT):
        raise BadRecordSignature("the revocation list's signature does not verify")
    return rec


class VerifiedDigests:
    """SHA-256 digests of exact record byte strings whose signatures verified (for one CA), at
    most `size`, least recently used forgotten first. Content-addressed, so it may be shared by
    several verifiers of the same network (an in-process simulation does)."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._digests: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, digest: object) -> bool:
        if isinstance(digest, bytes) and digest in self._digests:
            self._digests.move_to_end(digest)
            return True
        return False

    def add(self, digest: bytes) -> None:
        self._digests[digest] = None
        if len(self._digests) > self.size:
            self._digests.popitem(last=False)


class RecordVerifier:
    """Validates either record type for one network, remembering which exact byte strings have
    passed the signature checks (VerifiedDigests), so a record seen again costs a parse and the
    cheap checks only. Time, expiry, revocation and endpoints are checked again on every call.
    `revoked` is any container of revoked peer ids (hex) that the caller keeps up to date
    (revocations.RevokedSet)."""

    def __init__(
        self,
        ca_public_key: bytes,
        revoked: Collection[str] = frozenset(),
        *,
        allow_loopback: bool = False,
        cache: VerifiedDigests | None = None,
    ) -> None:
        self.ca_public_key = bytes(ca_public_key)
        self.ca_id = ca_id(self.ca_public_key)
        self.revoked = revoked
        self.allow_loopback = allow_loopback
        self._good = cache if cache is not None else VerifiedDigests()
        self.signature_checks = 0  # records whose signatures were actually verified

    def verify(self, raw: bytes, now: float) -> Record:
        rec = parse_record(raw)
        if isinstance(rec, NodeRecord):
            _node_cheap_checks(rec, self.ca_id, now, self.revoked, self.allow_loopback)
        else:
            _list_checks(rec, self.ca_id, now)
        digest = hashlib.sha256(self.ca_id + rec.raw).digest()
        if digest in self._good:
            return rec
        self.signature_checks += 1
        if isinstance(rec, NodeRecord):
            _node_signatures(rec, self.ca_public_key)
        elif not _verify(self.ca_public_key, rec.signature, rec.signed, CONTEXT_DHT):
            raise BadRecordSignature("the revocation list's signature does not verify")
        self._good.add(digest)
        return rec

    def node_record(self, raw: bytes, now: float) -> NodeRecord:
        rec = self.verify(raw, now)
        if not isinstance(rec, NodeRecord):
            raise MalformedRecord("not a node record")
        return rec

