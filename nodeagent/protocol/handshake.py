"""Peer handshake: the HELLO / CHALLENGE / CONFIRM messages and the two parties. Pure.

Hybrid X25519 + ML-KEM-1024, authenticated with ML-DSA-87. Who a party is and whom it accepts
come from trust.py (`LocalIdentity`, `Trust`: pinned keys or the mesh CA); the responder's HELLO
replay and flood filter is hello_guard.py; every error raised is a handshake_errors.HandshakeError.

- Initiator(local, trust, responder_peer_id, now, *, local_index=None, timestamp_ms=None) and
  Responder(local, trust, now, *, guard=None, local_index=None): pass the agent's session index
  (else a random 32-bit one), a strictly increasing HELLO timestamp per initiator (else now in
  ms) and ONE shared HelloGuard per node;
- HandshakeResult carries the data keypair, the authenticated PeerIdentity, control
  (ControlKeys send/recv for control.ControlCipher), transcript_hash and initiator;
  Initiator/Responder have .failed.

Three messages, carried by the TCP control channel (they are 5-14 KB) or relayed opaquely by a
hub (control.RELAY_HANDSHAKE). Every message starts with its type byte; integers are big-endian.
Version 2 (HANDSHAKE_VERSION; docs/protocol.md#versioning): the HELLO is signed by the initiator
and names its responder, so a HELLO that claims a peer but was not made by it is refused before
the responder does any work beyond one signature verification.

    HELLO      initiator → responder:
               type=1 ‖ version u8 ‖ suite u8 ‖ initiator peer id (20) ‖ responder peer id (20) ‖
               initiator index u32 ‖ timestamp u64 (unix ms) ‖ X25519 ephemeral e_i (32) ‖
               ML-KEM-1024 encapsulation key ek (1568) ‖ credential_i (u16 length ‖ bytes) ‖
               sig_h (4627)
    CHALLENGE  responder → initiator:
               type=2 ‖ responder index u32 ‖ X25519 ephemeral e_r (32) ‖ ML-KEM ciphertext ct (1568) ‖
               credential_r (u16 length ‖ bytes) ‖ sig_r (4627) ‖ mac_r (32)
    CONFIRM    initiator → responder:
               type=3 ‖ sig_i (4627) ‖ mac_i (32)

Signatures use FIPS 204 context "shadowmesh/handshake/v2" and a role label, so no signature can
pass for another: sig_h = Sign(sk_i, "…initiator hello" ‖ H0) with H0 = the HELLO up to and
including credential_i; T1 = HELLO ‖ CHALLENGE up to and including credential_r,
sig_r = Sign(sk_r, "…responder signature" ‖ T1); T2 = T1 ‖ sig_r ‖ mac_r ‖ CONFIRM's type byte,
sig_i = Sign(sk_i, "…initiator signature" ‖ T2). Key confirmation: mac_r = HMAC-SHA256(confirm_r,
H(T1 ‖ sig_r)), mac_i = HMAC-SHA256(confirm_i, H(T2 ‖ sig_i)). sig_h authenticates the HELLO (its
ephemerals, timestamp and responder) before any responder work; sig_i binds the initiator to the
whole transcript, the responder's fresh ephemerals included.

Keys (`derive_keys`, the combiner; docs/protocol.md#key-schedule), once the responder has e_r and ct:
    prk = HKDF-Extract(salt = SHA-256(T1), ikm = ss_mlkem ‖ ss_x25519 ‖ e_i ‖ e_r ‖ ct)
    k_name = HKDF-Expand(prk, info = "shadowmesh/handshake/v2 " ‖ name, 32) for the six names
    i2r data, r2i data, i2r control, r2i control, confirm responder, confirm initiator.
Every ikm field has a fixed length, so the concatenation is injective; T1 binds version, suite,
both peer ids, both indices, the timestamp, both ephemerals, ct and both credentials.
There is no classical-only mode: a HELLO without the ML-KEM key is malformed, and any other
version or suite is refused (VersionMismatch). A MITM rewriting a field breaks a signature, the
keys and the MACs.

Order of checks (cheap before expensive):
- consume_hello: version/suite, strict parse, not ourselves, addressed to us, trust.knows(initiator
  id) (unknown → refused before any asymmetric operation), HelloGuard.check (timestamp not newer
  than the last authenticated HELLO of that peer, too far ahead, flood), X25519 share not
  low-order; then the credential (trust.authenticate: a certificate verify, or none when the same
  certificate was verified before) and its peer id == the claimed one; then ONE ML-DSA verify of
  sig_h; then HelloGuard.accept records the timestamp. No signature, no encapsulation.
- create_challenge: ML-KEM ek check + encapsulation, X25519, key derivation, one ML-DSA sign.
- consume_challenge: parse, X25519 + decapsulation, mac_r (a tampered ct fails HERE, as
  KeyConfirmationFailed), credential (certificate verify), expected peer id, sig_r verify.
- consume_confirm: parse, mac_i, the HELLO's credential again (a peer revoked meanwhile is
  refused), sig_i verify.

Replay of HELLOs: a HELLO is recorded in the guard as soon as its signature verified (it was made
by that peer, so the record cannot be poisoned by anyone else); a copy arriving later, while or
after its handshake runs, is not newer and is refused before any verification.

Time: `now` is wall-clock unix seconds (certificate validity, HELLO timestamps). The keypair's
created_at is that same `now`; KeyRing.install re-stamps it with the session's clock.

Threads: the agent runs these methods on worker threads (control/crypto.py) so that ML-DSA, whose
calls release the GIL, does not stall the packet loop; one party object is only ever used by one
thread at a time, and the shared HelloGuard and MeshCA state are safe to share.

Measured: bench/handshake.py (BENCHMARKS.md#handshake).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .constants import (
    CONTEXT_HANDSHAKE,
    HANDSHAKE_VERSION,
    MLDSA87_SIGNATURE_SIZE,
    MLKEM1024_CIPHERTEXT_SIZE,
    MLKEM1024_PUBLIC_KEY_SIZE,
    PEER_ID_SIZE,
    SUITE_HYBRID_V1,
    X25519_KEY_SIZE,
)
from .handshake_errors import (
    BadShare,
    BadSignature,
    HandshakeError,
    HandshakeStateError,
    KeyConfirmationFailed,
    MalformedHandshake,
    UnknownPeer,
    VersionMismatch,
    WrongPeer,
)
from .hello_guard import HelloGuard
from .identity import PEER_ID_RE, peer_id_bytes
from .keys import Keypair
from .opcount import COUNTS
from .trust import LocalIdentity, PeerIdentity, Trust
from .wire import Reader

__all__ = [
    "CONFIRM_SIZE",
    "HELLO_FIXED_SIZE",
    "ControlKeys",
    "HandshakeResult",
    "Initiator",
    "MessageType",
    "Responder",
    "SessionKeys",
    "derive_keys",
    "message_type",
]

_ZERO_ID = bytes(PEER_ID_SIZE)
_MAC_SIZE = 32
_LABEL_HELLO = b"shadowmesh/handshake/v2 initiator hello\x00"
_LABEL_RESPONDER = b"shadowmesh/handshake/v2 responder signature\x00"
_LABEL_INITIATOR = b"shadowmesh/handshake/v2 initiator signature\x00"
_KDF_INFO = b"shadowmesh/handshake/v2 "


# --- the combiner -----------------------------------------------------------------------------


class SessionKeys(NamedTuple):
    i2r_data: bytes
    r2i_data: bytes
    i2r_control: bytes
    r2i_control: bytes
    confirm_responder: bytes
    confirm_initiator: bytes


_KEY_NAMES = (
    b"i2r data",
    b"r2i data",
    b"i2r control",
    b"r2i control",
    b"confirm responder",
    b"confirm initiator",
)


def derive_keys(
    ss_mlkem: bytes, ss_x25519: bytes, e_i: bytes, e_r: bytes, ct: bytes, transcript_hash: bytes
) -> SessionKeys:
    """The hybrid combiner: HKDF-SHA256 over both secrets, both shares and the ciphertext."""
    for value, size, what in (
        (ss_mlkem, 32, "ML-KEM secret"),
        (ss_x25519, 32, "X25519 secret"),
        (e_i, X25519_KEY_SIZE, "initiator share"),
        (e_r, X25519_KEY_SIZE, "responder share"),
        (ct, MLKEM1024_CIPHERTEXT_SIZE, "ciphertext"),
        (transcript_hash, 32, "transcript hash"),
    ):
        if len(value) != size:
            raise HandshakeError(f"{what} must be {size} bytes")
    prk = hmac.digest(transcript_hash, ss_mlkem + ss_x25519 + e_i + e_r + ct, "sha256")
    return SessionKeys(
        *(HKDFExpand(hashes.SHA256(), 32, _KDF_INFO + name).derive(prk) for name in _KEY_NAMES)
    )


# --- results ----------------------------------------------------------------------------------


class ControlKeys(NamedTuple):
    send: bytes
    recv: bytes


@dataclass(slots=True)
class HandshakeResult:
    keypair: Keypair
    peer: PeerIdentity
    control: ControlKeys
    transcript_hash: bytes  # SHA-256 of the full transcript; a session id for logs
    initiator: bool
    hello_timestamp_ms: int = field(default=0)


# --- wire -------------------------------------------------------------------------------------


class MessageType(enum.IntEnum):
    HELLO = 1
    CHALLENGE = 2
    CONFIRM = 3


_HELLO_HEAD = struct.Struct("!BBB20s20sIQ")
_U16 = struct.Struct("!H")
_E_I = slice(_HELLO_HEAD.size, _HELLO_HEAD.size + X25519_KEY_SIZE)
_EK = slice(_E_I.stop, _E_I.stop + MLKEM1024_PUBLIC_KEY_SIZE)
# a HELLO is this long plus its credential (a bare key: 8,876 bytes; with a certificate ~13.6 KB)
HELLO_FIXED_SIZE = _EK.stop + _U16.size + MLDSA87_SIGNATURE_SIZE
CONFIRM_SIZE = 1 + MLDSA87_SIGNATURE_SIZE + _MAC_SIZE

# canonical encodings of the X25519 points of small order (and their non-canonical twins)
_P = 2**255 - 19
_LOW_ORDER = frozenset(
    v.to_bytes(32, "little")
    for v in (
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P - 1,
        _P,
        _P + 1,
    )
)


def _check_x25519_share(share: bytes) -> None:
    masked = share[:31] + bytes([share[31] & 0x7F])
    if masked in _LOW_ORDER:
        raise BadShare("X25519 share is of low order")


def _as_bytes(message: object) -> bytes:
    if not isinstance(message, bytes | bytearray | memoryview):
        raise MalformedHandshake("expected bytes")
    return bytes(message)


def message_type(message: bytes) -> MessageType:
    """The type of a handshake message (first byte); MalformedHandshake if unknown or empty."""
    if not isinstance(message, bytes | bytearray | memoryview) or not message:
        raise MalformedHandshake("empty handshake message")
    try:
        return MessageType(message[0])
    except ValueError as exc:
        raise MalformedHandshake(f"unknown handshake message type {message[0]}") from exc


def _expect(message: bytes, mtype: MessageType) -> Reader:
    if not isinstance(message, bytes | bytearray | memoryview):
        raise MalformedHandshake("expected bytes")
    if message_type(message) is not mtype:
        raise MalformedHandshake(f"expected {mtype.name}, got {MessageType(message[0]).name}")
    r = Reader(message, MalformedHandshake)
    r.take(1, "type")
    return r


def _mac(key: bytes, *parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return hmac.digest(key, h.digest(), "sha256")


def _verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    COUNTS.bump("verifications")
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(public_key).verify(signature, message, CONTEXT_HANDSHAKE)
    except (InvalidSignature, ValueError) as exc:
        raise BadSignature("handshake signature does not verify") from exc


def _x25519(private: x25519.X25519PrivateKey, share: bytes) -> bytes:
    _check_x25519_share(share)
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(share))
    except ValueError as exc:  # all-zero result
        raise BadShare("X25519 share is of low order") from exc


def _index(value: int | None) -> int:
    if value is None:
        return secrets.randbits(32)
    if not 0 <= value < 2**32:
        raise HandshakeError("session index must be a 32-bit unsigned integer")
    return value


class _State(enum.Enum):
    START = "start"
    WAITING = "waiting"  # initiator: HELLO sent; responder: CHALLENGE sent
    READY = "ready"  # initiator: CHALLENGE accepted; responder: HELLO accepted
    DONE = "done"
    FAILED = "failed"


class _Party:
    def __init__(self, local: LocalIdentity, trust: Trust) -> None:
        self.local = local
        self.trust = trust
        self.state = _State.START
        self._result: HandshakeResult | None = None

    @property
    def result(self) -> HandshakeResult:
        if self._result is None:
            raise HandshakeStateError("the handshake has not completed")
        return self._result

    @property
    def failed(self) -> bool:
        return self.state is _State.FAILED

    def _require(self, state: _State, action: str) -> None:
        if self.state is not state:
            raise HandshakeStateError(f"cannot {action} in state {self.state.value}")

    def _fail(self) -> None:
        self.state = _State.FAILED
        self._forget_secrets()

    def _forget_secrets(self) -> None:  # overridden
        pass


def _result(keys: SessionKeys, peer: PeerIdentity, *, initiator: bool, local_index: int,
            remote_index: int, now: float, transcript: bytes, hello_timestamp_ms: int) -> HandshakeResult:
    """The session both parties derive, seen from one side: the initiator sends on the i2r keys
    and receives on r2i, the responder the other way round. The one place that choice is made."""
    if initiator:
        data, control = (keys.i2r_data, keys.r2i_data), (keys.i2r_control, keys.r2i_control)
    else:
        data, control = (keys.r2i_data, keys.i2r_data), (keys.r2i_control, keys.i2r_control)
    keypair = Keypair(data[0], data[1], local_index=local_index, remote_index=remote_index,
                      created_at=now, initiator=initiator)
    return HandshakeResult(
        keypair=keypair,
        peer=peer,
        control=ControlKeys(*control),
        transcript_hash=hashlib.sha256(transcript).digest(),
        initiator=initiator,
        hello_timestamp_ms=hello_timestamp_ms,
    )


# --- initiator --------------------------------------------------------------------------------


class Initiator(_Party):
    """Starts a handshake: create_hello → consume_challenge → create_confirm → result."""

    def __init__(
        self,
        local: LocalIdentity,
        trust: Trust,
        expected_peer_id: str,
        now: float,
        *,
        local_index: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """`expected_peer_id`: the responder (a HELLO always names it). `timestamp_ms`: the HELLO's
        timestamp, which must grow with every HELLO this node sends to one responder (the caller
        keeps it strictly increasing); by default `now` in milliseconds."""
        super().__init__(local, trust)
        if not isinstance(expected_peer_id, str) or not PEER_ID_RE.match(expected_peer_id):
            raise HandshakeError("the responder's peer id must be 40 lowercase hex characters")
        self.expected_peer_id = expected_peer_id
        self._responder_id = bytes.fromhex(expected_peer_id)
        self.created_at = now
        self.local_index = _index(local_index)
        self.timestamp_ms = int(now * 1000) if timestamp_ms is None else timestamp_ms
        if not 0 <= self.timestamp_ms < 2**64:
            raise HandshakeError("the HELLO timestamp must be a 64-bit unsigned integer")
        self._x: x25519.X25519PrivateKey | None = None
        self._kem: mlkem.MLKEM1024PrivateKey | None = None
        self._hello = b""
        self._keys: SessionKeys | None = None
        self._t1 = b""
        self._sig_r = b""
        self._mac_r = b""
        self._peer: PeerIdentity | None = None
        self._remote_index = 0
        self._now = now

    def _forget_secrets(self) -> None:
        self._x = None
        self._kem = None
        self._keys = None

    def create_hello(self) -> bytes:
        self._require(_State.START, "create a HELLO")
        self._x = x25519.X25519PrivateKey.generate()
        self._kem = mlkem.MLKEM1024PrivateKey.generate()
        cred = self.local.credential
        signed = (
            _HELLO_HEAD.pack(
                MessageType.HELLO,
                HANDSHAKE_VERSION,
                SUITE_HYBRID_V1,
                peer_id_bytes(self.local.public_key),
                self._responder_id,
                self.local_index,
                self.timestamp_ms,
            )
            + self._x.public_key().public_bytes_raw()
            + self._kem.public_key().public_bytes_raw()
            + _U16.pack(len(cred))
            + cred
        )
        COUNTS.bump("signatures")
        self._hello = signed + self.local.private_key.sign(_LABEL_HELLO + signed, CONTEXT_HANDSHAKE)
        self.state = _State.WAITING
        return self._hello

    def consume_challenge(self, message: bytes, now: float) -> None:
        self._require(_State.WAITING, "consume a CHALLENGE")
        try:
            self._consume_challenge(_as_bytes(message), now)
        except HandshakeError:
            self._fail()
            raise

    def _consume_challenge(self, message: bytes, now: float) -> None:
        assert self._x is not None and self._kem is not None
        r = _expect(message, MessageType.CHALLENGE)
        remote_index = r.u32("responder index")
        e_r = r.take(X25519_KEY_SIZE, "responder share")
        ct = r.take(MLKEM1024_CIPHERTEXT_SIZE, "ML-KEM ciphertext")
        credential = r.prefixed16("responder credential")
        t1_end = r.position
        sig_r = r.take(MLDSA87_SIGNATURE_SIZE, "responder signature")
        mac_r = r.take(_MAC_SIZE, "responder MAC")
        r.end()
        t1 = self._hello + message[:t1_end]
        ss_x = _x25519(self._x, e_r)
        COUNTS.bump("decapsulations")
        try:
            ss_k = self._kem.decapsulate(ct)
        except ValueError as exc:
            raise MalformedHandshake("invalid ML-KEM ciphertext") from exc
        keys = derive_keys(ss_k, ss_x, self._hello[_E_I], e_r, ct, hashlib.sha256(t1).digest())
        if not hmac.compare_digest(_mac(keys.confirm_responder, t1, sig_r), mac_r):
            raise KeyConfirmationFailed("responder key confirmation failed")
        peer = self.trust.authenticate(credential, now)
        if peer.peer_id != self.expected_peer_id:
            raise WrongPeer(f"expected {self.expected_peer_id}, the responder is {peer.peer_id}")
        if peer.peer_id == self.local.peer_id:
            raise WrongPeer("the responder is ourselves")
        _verify(peer.public_key, sig_r, _LABEL_RESPONDER + t1)
        self._x = self._kem = None  # ephemeral secrets are no longer needed
        self._keys, self._t1, self._sig_r, self._mac_r = keys, t1, sig_r, mac_r
        self._peer, self._remote_index, self._now = peer, remote_index, now
        self.state = _State.READY

    def create_confirm(self) -> bytes:
        self._require(_State.READY, "create a CONFIRM")
        keys, peer = self._keys, self._peer
        assert keys is not None and peer is not None
        body = bytes([MessageType.CONFIRM])
        t2 = self._t1 + self._sig_r + self._mac_r + body
        COUNTS.bump("signatures")
        sig_i = self.local.private_key.sign(_LABEL_INITIATOR + t2, CONTEXT_HANDSHAKE)
        mac_i = _mac(keys.confirm_initiator, t2, sig_i)
        message = body + sig_i + mac_i
        self._result = _result(keys, peer, initiator=True, local_index=self.local_index,
                               remote_index=self._remote_index, now=self._now,
                               transcript=t2 + sig_i + mac_i, hello_timestamp_ms=self.timestamp_ms)
        self._keys = None
        self.state = _State.DONE
        return message


# --- responder --------------------------------------------------------------------------------


class Responder(_Party):
    """Answers a handshake: consume_hello → create_challenge → consume_confirm → result."""

    def __init__(
        self,
        local: LocalIdentity,
        trust: Trust,
        now: float,
        *,
        guard: HelloGuard | None = None,
        local_index: int | None = None,
    ) -> None:
        super().__init__(local, trust)
        self.guard = guard if guard is not None else HelloGuard()
        self.created_at = now
        self.local_index = _index(local_index)
        self.peer_id: str | None = None
        self.remote_index = 0
        self.timestamp_ms = 0
        self._hello = b""
        self._credential = b""
        self._now = now
        self._keys: SessionKeys | None = None
        self._t1_sig_mac = b""

    def _forget_secrets(self) -> None:
        self._keys = None

    def consume_hello(self, message: bytes, now: float) -> str:
        """Check a HELLO, cheapest first, up to one signature verification (see the module
        docstring); returns the initiator's peer id, which the HELLO's signature authenticated."""
        self._require(_State.START, "consume a HELLO")
        try:
            return self._consume_hello(_as_bytes(message), now)
        except HandshakeError:
            self._fail()
            raise

    def _consume_hello(self, message: bytes, now: float) -> str:
        if message_type(message) is not MessageType.HELLO:
            raise MalformedHandshake("expected HELLO")
        if len(message) < 3:
            raise MalformedHandshake("truncated HELLO")
        if message[1] != HANDSHAKE_VERSION or message[2] != SUITE_HYBRID_V1:
            raise VersionMismatch(f"unsupported version {message[1]} / suite {message[2]}")
        r = Reader(message, MalformedHandshake)
        head = r.take(_HELLO_HEAD.size, "head")
        initiator_id: bytes
        responder_id: bytes
        index: int
        timestamp: int
        _, _, _, initiator_id, responder_id, index, timestamp = _HELLO_HEAD.unpack(head)
        r.take(X25519_KEY_SIZE, "initiator share")
        r.take(MLKEM1024_PUBLIC_KEY_SIZE, "ML-KEM key")
        credential = r.prefixed16("initiator credential")
        signed_end = r.position
        sig_h = r.take(MLDSA87_SIGNATURE_SIZE, "HELLO signature")
        r.end()
        pid = initiator_id.hex()
        if pid == self.local.peer_id:
            raise WrongPeer("HELLO from ourselves")
        if responder_id.hex() != self.local.peer_id:
            raise WrongPeer("HELLO addressed to another peer")
        if not self.trust.knows(pid):
            raise UnknownPeer(f"{pid} is not a peer we accept", peer_id=pid)
        self.guard.check(pid, timestamp, now)
        _check_x25519_share(message[_E_I])
        # the first asymmetric work: is the HELLO really the claimed peer's?
        peer = self.trust.authenticate(credential, now)
        if peer.peer_id != pid:
            raise WrongPeer(f"HELLO claimed {pid}, the credential is {peer.peer_id}")
        _verify(peer.public_key, sig_h, _LABEL_HELLO + message[:signed_end])
        self.guard.accept(pid, timestamp, now)
        self.peer_id, self.remote_index, self.timestamp_ms = pid, index, timestamp
        self._hello, self._credential, self._now = message, credential, now
        self.state = _State.READY
        return pid

    def create_challenge(self) -> bytes:
        self._require(_State.READY, "create a CHALLENGE")
        try:
            return self._create_challenge()
        except HandshakeError:
            self._fail()
            raise

    def _create_challenge(self) -> bytes:
        hello = self._hello
        e_i = hello[_E_I]
        try:
            ek = mlkem.MLKEM1024PublicKey.from_public_bytes(hello[_EK])
        except ValueError as exc:
            raise BadShare("invalid ML-KEM-1024 encapsulation key") from exc
        COUNTS.bump("encapsulations")
        ss_k, ct = ek.encapsulate()
        x = x25519.X25519PrivateKey.generate()
        ss_x = _x25519(x, e_i)
        e_r = x.public_key().public_bytes_raw()
        cred = self.local.credential
        body = (
            bytes([MessageType.CHALLENGE])
            + struct.pack("!I", self.local_index)
            + e_r
            + ct
            + _U16.pack(len(cred))
            + cred
        )
        t1 = hello + body
        keys = derive_keys(ss_k, ss_x, e_i, e_r, ct, hashlib.sha256(t1).digest())
        COUNTS.bump("signatures")
        sig_r = self.local.private_key.sign(_LABEL_RESPONDER + t1, CONTEXT_HANDSHAKE)
        mac_r = _mac(keys.confirm_responder, t1, sig_r)
        self._keys = keys
        self._t1_sig_mac = t1 + sig_r + mac_r
        self.state = _State.WAITING
        return body + sig_r + mac_r

    def consume_confirm(self, message: bytes, now: float) -> HandshakeResult:
        self._require(_State.WAITING, "consume a CONFIRM")
        try:
            return self._consume_confirm(_as_bytes(message), now)
        except HandshakeError:
            self._fail()
            raise

    def _consume_confirm(self, message: bytes, now: float) -> HandshakeResult:
        keys = self._keys
        assert keys is not None and self.peer_id is not None
        r = _expect(message, MessageType.CONFIRM)
        sig_i = r.take(MLDSA87_SIGNATURE_SIZE, "initiator signature")
        mac_i = r.take(_MAC_SIZE, "initiator MAC")
        r.end()
        t2 = self._t1_sig_mac + message[:1]
        if not hmac.compare_digest(_mac(keys.confirm_initiator, t2, sig_i), mac_i):
            raise KeyConfirmationFailed("initiator key confirmation failed")
        peer = self.trust.authenticate(self._credential, now)  # revoked or expired meanwhile?
        if peer.peer_id != self.peer_id:
            raise WrongPeer(f"HELLO claimed {self.peer_id}, the credential is {peer.peer_id}")
        _verify(peer.public_key, sig_i, _LABEL_INITIATOR + t2)
        self._result = _result(keys, peer, initiator=False, local_index=self.local_index,
                               remote_index=self.remote_index, now=now,
                               transcript=t2 + sig_i + mac_i, hello_timestamp_ms=self.timestamp_ms)
        self._keys = None
        self.state = _State.DONE
        return self._result
