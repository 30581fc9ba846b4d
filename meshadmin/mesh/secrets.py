"""Bearer secrets (enrollment and session tokens, operator API keys): generation, hashing and
constant-time checks.

Tokens are 256-bit random (`secrets.token_urlsafe(32)`), shown once and stored only as
HMAC-SHA-256 under a fixed, public domain-separation key. For 256-bit random secrets a keyed
slow hash buys nothing; the HMAC key only keeps these hashes from matching any other SHA-256 use,
and it does not depend on SECRET_KEY, so rotating SECRET_KEY never invalidates tokens.
Lookups go by hash through a unique index; `prefix` (6 characters) only helps people tell tokens
apart in the admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets

from .constants import TOKEN_BYTES, TOKEN_PREFIX_CHARS

__all__ = ["hash_secret", "new_token", "token_prefix"]

_DOMAIN = {
    "enroll": b"shadowmesh/enrollment-token/v1",
    "session": b"shadowmesh/session-token/v1",
    "challenge": b"shadowmesh/auth-challenge/v1",
    "apikey": b"shadowmesh/operator-api-key/v1",
}
_MAX_TOKEN_LENGTH = 256


def new_token() -> str:
    return _secrets.token_urlsafe(TOKEN_BYTES)


def token_prefix(token: str) -> str:
    return token[:TOKEN_PREFIX_CHARS]


def hash_secret(kind: str, value: str | bytes) -> str:
    """Hex HMAC-SHA-256 of a token (str) or challenge (bytes) under its kind's domain key."""
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    return hmac.new(_DOMAIN[kind], raw[:_MAX_TOKEN_LENGTH], hashlib.sha256).hexdigest()
