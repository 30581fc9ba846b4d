"""Who we accept as a peer, and who we are: the trust modes of the peer handshake. Pure.

A handshake party holds a `LocalIdentity` (our ML-DSA-87 private key and the credential we
present) and a `Trust` that turns the other side's credential into a `PeerIdentity`:

- `PinnedKeys` (serverless mode): the credential is a bare ML-DSA-87 public key, accepted if it
  is one of the keys pinned in the config.
- `MeshCA` (enrolled mode): the credential is a certificate (cert.py) issued by the mesh CA,
  valid at `now`, of a peer that is not revoked and, when the netmap gave a peer list, on it;
  when the agent passes `overlay_of` (the address its applied netmap gives a peer), the
  certificate's overlay address must be that one. A certificate verified once is remembered (by
  its exact bytes, for peers on the list): presenting it again costs no signature verification,
  while validity, revocation, the list and the address are checked every time.

`knows(peer_id)` is the cheap pre-check the responder runs on a HELLO before any asymmetric
work; `authenticate(credential, now)` is the full check and refuses with a handshake_errors kind
(BadCredential, UnknownPeer, RevokedPeer, WrongAddress). Both are called from the agent's
handshake worker threads while the loop thread applies netmaps: the state they read is replaced
whole (sets, dict entries), never changed in place halfway.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import mldsa

from .cert import CertFlags, Certificate, CertificateError, parse_certificate, verify_certificate
from .constants import MLDSA87_PUBLIC_KEY_SIZE
from .handshake_errors import BadCredential, RevokedPeer, UnknownPeer, WrongAddress
from .identity import IdentityError, peer_id
from .opcount import COUNTS

__all__ = ["LocalIdentity", "MeshCA", "PeerIdentity", "PinnedKeys", "Trust"]


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    peer_id: str
    public_key: bytes
    overlay_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    name: str | None = None
    flags: int = 0
    not_after: int | None = None  # the certificate's end (Unix seconds); None: a pinned key, no end

    @property
    def is_public(self) -> bool:
        return bool(self.flags & CertFlags.PUBLIC)

    @property
    def is_relay(self) -> bool:
        return bool(self.flags & CertFlags.RELAY)


class Trust(Protocol):
    def knows(self, peer_id: str) -> bool:
        """Cheap pre-check on a claimed peer id (no cryptography)."""

    def authenticate(self, credential: bytes, now: float) -> PeerIdentity:
        """Verify a credential; raise a HandshakeError if it does not authenticate."""


class PinnedKeys:
    """Serverless mode: peers are the ML-DSA-87 public keys pinned in the config."""

    def __init__(self, keys: Mapping[str, bytes] | Iterable[bytes]) -> None:
        self._keys: dict[str, bytes] = {}
        items = keys.items() if isinstance(keys, Mapping) else ((None, k) for k in keys)
        for claimed, key in items:
            try:
                pid = peer_id(key)
            except IdentityError as exc:
                raise BadCredential(f"pinned key: {exc}") from exc
            if claimed is not None and claimed != pid:
                raise BadCredential(f"pinned key for {claimed} has peer id {pid}")
            self._keys[pid] = bytes(key)

    def knows(self, peer_id: str) -> bool:
        return peer_id in self._keys

    def authenticate(self, credential: bytes, now: float) -> PeerIdentity:
        if len(credential) != MLDSA87_PUBLIC_KEY_SIZE:
            raise BadCredential("serverless mode expects a bare ML-DSA-87 public key")
        pid = peer_id(credential)
        pinned = self._keys.get(pid)
        if pinned is None or not hmac.compare_digest(pinned, credential):
            raise UnknownPeer(f"{pid} is not pinned")
        return PeerIdentity(pid, pinned)


class MeshCA:
    """Enrolled mode: peers present certificates issued by the mesh CA.

    `known_peer_ids`, when given (e.g. from the netmap), restricts knows() to those peers, so a
    HELLO from an id we never heard of is refused before any work. Revocation is by peer id.
    `overlay_of(peer_id)`, when given, is the overlay address the applied netmap gives that peer
    (None: not in it); a certificate for another address is refused (WrongAddress).
    """

    CACHE_MAX = 4096  # verified certificates remembered when there is no peer list

    def __init__(
        self,
        ca_public_key: bytes,
        revoked_peer_ids: Iterable[str] = (),
        known_peer_ids: Iterable[str] | None = None,
        *,
        overlay_of: Callable[[str], ipaddress.IPv4Address | ipaddress.IPv6Address | None] | None = None,
    ) -> None:
        if len(ca_public_key) != MLDSA87_PUBLIC_KEY_SIZE:
            raise BadCredential("the CA key must be an ML-DSA-87 public key")
        self.ca_public_key = bytes(ca_public_key)
        self.revoked: set[str] = set(revoked_peer_ids)
        self._known: set[str] | None = None if known_peer_ids is None else set(known_peer_ids)
        self.overlay_of = overlay_of
        self._verified: dict[bytes, Certificate] = {}  # certificate bytes -> verified against our CA

    @property
    def known(self) -> set[str] | None:
        return self._known

    @known.setter
    def known(self, peer_ids: set[str] | None) -> None:
        self._known = peer_ids
        if peer_ids is not None:  # forget the certificates of peers that left
            # list() copies in one step: a worker thread may add an entry meanwhile
            self._verified = {k: c for k, c in list(self._verified.items()) if c.peer_id in peer_ids}

    def revoke(self, peer_id: str) -> None:
        self.revoked.add(peer_id)
        entries = list(self._verified.items())  # one step: a worker thread may add an entry meanwhile
        if any(c.peer_id == peer_id for _, c in entries):
            self._verified = {k: c for k, c in entries if c.peer_id != peer_id}

    def knows(self, peer_id: str) -> bool:
        known = self._known
        return peer_id not in self.revoked and (known is None or peer_id in known)

    def _certificate(self, credential: bytes, now: float) -> Certificate:
        cert = self._verified.get(credential)
        if cert is not None:
            if not cert.not_before <= int(now) < cert.not_after:
                raise BadCredential("certificate: certificate is outside its validity period")
            return cert
        COUNTS.bump("verifications")
        try:
            cert = verify_certificate(credential, self.ca_public_key, int(now))
        except CertificateError as exc:
            raise BadCredential(f"certificate: {exc}") from exc
        known = self._known
        if cert.peer_id not in self.revoked and ((known is not None and cert.peer_id in known)
                                                 or (known is None and len(self._verified) < self.CACHE_MAX)):
            self._verified[bytes(credential)] = cert
        return cert

    def authenticate(self, credential: bytes, now: float) -> PeerIdentity:
        cert = self._certificate(credential, now)
        if cert.peer_id in self.revoked:
            raise RevokedPeer(f"{cert.peer_id} is revoked")
        known = self._known
        if known is not None and cert.peer_id not in known:
            raise UnknownPeer(f"{cert.peer_id} is not in this mesh's peer list")
        if self.overlay_of is not None:
            expected = self.overlay_of(cert.peer_id)
            if expected is None:
                raise UnknownPeer(f"{cert.peer_id} has no address in the applied netmap")
            if cert.overlay_ip != expected:
                raise WrongAddress(f"{cert.peer_id}'s certificate is for {cert.overlay_ip}, "
                                   f"the netmap places it at {expected}")
        return PeerIdentity(cert.peer_id, cert.public_key, cert.overlay_ip, cert.name, int(cert.flags),
                            cert.not_after)


class LocalIdentity:
    """Our ML-DSA-87 private key and the credential we present (a certificate or our public key)."""

    __slots__ = ("credential", "peer_id", "private_key", "public_key")

    def __init__(self, private_key: mldsa.MLDSA87PrivateKey, credential: bytes) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.peer_id = peer_id(self.public_key)
        self.credential = bytes(credential)
        if self.credential != self.public_key:
            try:
                cert = parse_certificate(self.credential)
            except CertificateError as exc:
                raise BadCredential(f"our credential is not our key nor a certificate: {exc}") from exc
            if cert.public_key != self.public_key:
                raise BadCredential("our certificate is for another key")

    def replace_credential(self, credential: bytes) -> None:
        """Present `credential` from the next handshake on (a renewed certificate); it must be a
        certificate for our key. Sessions made under the old one stay up until their rekey."""
        try:
            cert = parse_certificate(credential)
        except CertificateError as exc:
            raise BadCredential(f"the new credential is not a certificate: {exc}") from exc
        if cert.public_key != self.public_key:
            raise BadCredential("the new certificate is for another key")
        self.credential = bytes(credential)

    @classmethod
    def pinned(cls, private_key: mldsa.MLDSA87PrivateKey) -> LocalIdentity:
        """Serverless mode: present the bare public key."""
        return cls(private_key, private_key.public_key().public_bytes_raw())
