"""Node authentication to meshadmin: what a node signs to prove who it is. Pure.

Two paths, two FIPS 204 contexts, so a signature made for one is never accepted by the other:

- HTTP (POST /api/auth/challenge, then /api/auth/verify): the node signs the decoded challenge
  bytes with context "shadowmesh/auth/v1" (constants.CONTEXT_AUTH); the answer is a bearer session
  token. Checked by `verify_auth_signature`.
- the agent websocket (/ws/agent/): the server's first frame carries a 32-byte nonce; the node
  signs `agent_login_message(ca_public_key, nonce)` =
      "shadowmesh agent websocket login" ‖ 0x00 ‖ SHA-256(CA public key) ‖ nonce
  with context "shadowmesh/agent-auth/v1" (constants.CONTEXT_AGENT_AUTH). The purpose and the
  network's CA (the server's identity as the agent knows it from enrollment) are bound into what
  is signed, so an impersonated server that passes the agent a real HTTP challenge gets a
  signature /api/auth/verify refuses, and a server of another network gets one the real server
  refuses. Checked by `verify_agent_login`.

Each meshadmin path decides what a refusal means (audit reason, HTTP status, close code).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from .constants import CONTEXT_AGENT_AUTH, CONTEXT_AUTH, MLDSA87_SIGNATURE_SIZE
from .enroll_token import ca_fingerprint

__all__ = [
    "AGENT_LOGIN_LABEL",
    "BadAuthSignature",
    "agent_login_message",
    "login_message_for",
    "sign_agent_login",
    "verify_agent_login",
    "verify_auth_signature",
]

AGENT_LOGIN_LABEL = b"shadowmesh agent websocket login"
NONCE_SIZE = 32


class BadAuthSignature(ValueError):
    """The signature does not prove the key's holder signed the challenge; str() says why."""


def _verify(public_key: bytes, message: bytes, signature: bytes, context: bytes) -> None:
    if len(signature) != MLDSA87_SIGNATURE_SIZE:
        raise BadAuthSignature("signature has the wrong length")
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(bytes(public_key)).verify(signature, message, context)
    except (InvalidSignature, ValueError):
        raise BadAuthSignature("bad signature") from None


def verify_auth_signature(public_key: bytes, challenge: bytes, signature: bytes) -> None:
    """HTTP path: raise BadAuthSignature unless `signature` is the ML-DSA-87 signature of
    `challenge` by `public_key` under the auth context. A stored key that is not an ML-DSA-87 key
    cannot verify."""
    _verify(public_key, challenge, signature, CONTEXT_AUTH)


def agent_login_message(ca_public_key: bytes, nonce: bytes) -> bytes:
    """What an agent signs to log in on the websocket of the server of `ca_public_key`'s network."""
    return login_message_for(ca_fingerprint(ca_public_key), nonce)


def login_message_for(fingerprint: bytes, nonce: bytes) -> bytes:
    """The same, from the CA's fingerprint (SHA-256 of its key, as an enrollment token carries it)."""
    if len(nonce) != NONCE_SIZE or len(fingerprint) != 32:
        raise ValueError(f"the websocket nonce is {NONCE_SIZE} bytes and a CA fingerprint 32")
    return AGENT_LOGIN_LABEL + b"\x00" + bytes(fingerprint) + bytes(nonce)


def sign_agent_login(private_key: mldsa.MLDSA87PrivateKey, ca_public_key: bytes, nonce: bytes) -> bytes:
    return private_key.sign(agent_login_message(ca_public_key, nonce), CONTEXT_AGENT_AUTH)


def verify_agent_login(public_key: bytes, ca_public_key: bytes, nonce: bytes, signature: bytes) -> None:
    """Websocket path: raise BadAuthSignature unless `signature` is the node's login signature for
    this nonce at the server of this CA's network."""
    _verify(public_key, agent_login_message(ca_public_key, nonce), signature, CONTEXT_AGENT_AUTH)
