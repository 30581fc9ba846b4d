"""Node authentication to meshadmin: the check of a node's signature over a challenge. Pure.

meshadmin sends a node random challenge bytes, over REST (POST /api/auth/challenge, then
/api/auth/verify) or as the websocket's first frame (messages.Challenge); the node signs them
with its ML-DSA-87 identity key and FIPS 204 context "shadowmesh/auth/v1" (constants.CONTEXT_AUTH),
so the signature is valid for nothing else. Both meshadmin paths check it with
`verify_auth_signature`; each decides what a refusal means (audit reason, HTTP status, close code).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from .constants import CONTEXT_AUTH, MLDSA87_SIGNATURE_SIZE

__all__ = ["BadAuthSignature", "verify_auth_signature"]


class BadAuthSignature(ValueError):
    """The signature does not prove the key's holder signed the challenge; str() says why."""


def verify_auth_signature(public_key: bytes, challenge: bytes, signature: bytes) -> None:
    """Raise BadAuthSignature unless `signature` is the ML-DSA-87 signature of `challenge` by
    `public_key` under the auth context. A stored key that is not an ML-DSA-87 key cannot verify."""
    if len(signature) != MLDSA87_SIGNATURE_SIZE:
        raise BadAuthSignature("signature has the wrong length")
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(bytes(public_key)).verify(signature, challenge, CONTEXT_AUTH)
    except (InvalidSignature, ValueError):
        raise BadAuthSignature("bad signature") from None
