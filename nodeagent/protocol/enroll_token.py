"""Enrollment tokens and the CA fingerprint they carry. Pure.

A token is what `manage.py createtoken` (or the dashboard) prints and `shadowmesh-agent enroll
--token` takes:

    <secret>.<CA fingerprint>

`secret` is the bearer secret (43 characters of URL-safe base64, 256 random bits); the server
stores only its hash and looks the token up by it. The CA fingerprint is SHA-256 of the network
CA's raw ML-DSA-87 public key, URL-safe base64 without padding (43 characters); the agent refuses
an enrollment answer whose CA key does not hash to it, so a man in the middle cannot hand it
another CA, even over plain http. '.' is not in the URL-safe base64 alphabet, so the split is
unambiguous. A token without the suffix (made before fingerprints existed) is an "old-form" token:
`fingerprint` is None and the caller decides (docs/protocol.md#enrollment-tokens).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from .constants import CA_FINGERPRINT_SIZE

__all__ = [
    "MAX_TOKEN_LENGTH",
    "EnrollToken",
    "TokenFormatError",
    "ca_fingerprint",
    "fingerprint_matches",
    "fingerprint_text",
    "make_token",
    "parse_fingerprint",
    "parse_token",
]

MAX_TOKEN_LENGTH = 256
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,200}$")
_FINGERPRINT_TEXT = 43  # 32 bytes in unpadded base64


class TokenFormatError(ValueError):
    """The token or fingerprint text has the wrong shape; str() says what is wrong."""


@dataclass(frozen=True, slots=True)
class EnrollToken:
    secret: str  # what the server hashes and looks up
    fingerprint: bytes | None  # SHA-256 of the CA public key, None for an old-form token


def ca_fingerprint(ca_public_key: bytes) -> bytes:
    """SHA-256 of the CA's raw public key (32 bytes)."""
    return hashlib.sha256(bytes(ca_public_key)).digest()


def fingerprint_text(fingerprint: bytes) -> str:
    if len(fingerprint) != CA_FINGERPRINT_SIZE:
        raise TokenFormatError(f"a CA fingerprint is {CA_FINGERPRINT_SIZE} bytes")
    return base64.urlsafe_b64encode(fingerprint).rstrip(b"=").decode("ascii")


def parse_fingerprint(text: str) -> bytes:
    """The fingerprint from its text: 43 characters of URL-safe base64, or 64 hex digits."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    if len(text) != _FINGERPRINT_TEXT or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise TokenFormatError("a CA fingerprint is 43 characters of URL-safe base64 (or 64 hex digits)")
    try:
        raw = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        raise TokenFormatError("the CA fingerprint is not base64") from None
    if len(raw) != CA_FINGERPRINT_SIZE or fingerprint_text(raw) != text:
        raise TokenFormatError("the CA fingerprint is not canonical base64 of 32 bytes")
    return raw


def make_token(secret: str, ca_public_key: bytes) -> str:
    if not _SECRET_RE.match(secret):
        raise TokenFormatError("a token secret is 16..200 URL-safe base64 characters")
    return f"{secret}.{fingerprint_text(ca_fingerprint(ca_public_key))}"


def parse_token(token: str) -> EnrollToken:
    """Split a token into its secret and CA fingerprint (None for an old-form token)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenFormatError(f"a token is 1..{MAX_TOKEN_LENGTH} characters")
    secret, dot, fp = token.strip().partition(".")
    if not _SECRET_RE.match(secret):
        raise TokenFormatError("the token's secret part is not 16..200 URL-safe base64 characters")
    if not dot:
        return EnrollToken(secret, None)
    return EnrollToken(secret, parse_fingerprint(fp))


def fingerprint_matches(fingerprint: bytes, ca_public_key: bytes) -> bool:
    return hmac.compare_digest(fingerprint, ca_fingerprint(ca_public_key))
