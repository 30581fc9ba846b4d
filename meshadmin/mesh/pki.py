"""The mesh CA: one ML-DSA-87 key per network; issues node certificates.

The certificate byte format and its verification live in nodeagent.protocol.cert (agents verify
offline with the same code). This module only holds the CA key and calls `issue_certificate`.

Where the CA private key lives: in `Network.ca_private_sealed`, as its 32-byte FIPS 204 seed
sealed with ChaCha20-Poly1305 (random 12-byte nonce, the network's CA public key as associated
data) under a key derived by HKDF-SHA-256 from Django's SECRET_KEY. Rotating SECRET_KEY: move the
old value to SHADOWMESH_SECRET_KEY_FALLBACKS; unsealing tries each fallback, and `reseal` writes
the seed back under the current key. The seed is never logged, shown in the admin or returned by
the API.
"""

from __future__ import annotations

import os
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from nodeagent.protocol.cert import CertFlags, issue_certificate

__all__ = ["CAKeyError", "issue_node_certificate", "load_ca_key", "new_ca_key", "seal_seed", "unseal_seed"]

_NONCE = 12
_INFO = b"shadowmesh/ca-seal/v1"


class CAKeyError(Exception):
    """The sealed CA key cannot be opened with the current or fallback secret keys."""


def _kek(secret_key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())


def seal_seed(seed: bytes, ca_public_key: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + ChaCha20Poly1305(_kek(settings.SECRET_KEY)).encrypt(nonce, seed, ca_public_key)


def unseal_seed(sealed: bytes, ca_public_key: bytes) -> bytes:
    sealed = bytes(sealed)
    nonce, body = sealed[:_NONCE], sealed[_NONCE:]
    for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        try:
            return ChaCha20Poly1305(_kek(secret)).decrypt(nonce, body, bytes(ca_public_key))
        except (InvalidTag, ValueError):
            continue
    raise CAKeyError("the network's CA key cannot be unsealed with SECRET_KEY or its fallbacks")


def new_ca_key() -> tuple[bytes, bytes]:
    """A fresh CA key: (raw public key, sealed seed)."""
    key = mldsa.MLDSA87PrivateKey.generate()
    public = key.public_key().public_bytes_raw()
    return public, seal_seed(key.private_bytes_raw(), public)


def load_ca_key(network) -> mldsa.MLDSA87PrivateKey:
    seed = unseal_seed(network.ca_private_sealed, network.ca_public_key)
    key = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed)
    if key.public_key().public_bytes_raw() != bytes(network.ca_public_key):
        raise CAKeyError("the sealed CA seed does not match the network's CA public key")
    return key


def issue_node_certificate(
    network,
    *,
    public_key: bytes,
    name: str,
    overlay_ip: str,
    is_public: bool,
    is_relay: bool,
    not_before: datetime,
    not_after: datetime,
) -> bytes:
    flags = CertFlags.NONE
    if is_public:
        flags |= CertFlags.PUBLIC
    if is_relay:
        flags |= CertFlags.RELAY
    return issue_certificate(
        load_ca_key(network),
        public_key=public_key,
        name=name,
        network=network.name,
        overlay_ip=overlay_ip,
        prefix_len=network.prefix.prefixlen,
        flags=flags,
        not_before=int(not_before.timestamp()),
        not_after=int(not_after.timestamp()),
    )
