"""Defaults of the mesh domain (docs/operations.md#lifetimes-and-timers); spec numbers live in
nodeagent.protocol.constants."""

from datetime import timedelta

from nodeagent.protocol.constants import DEFAULT_OVERLAY_CIDR, PEER_RECORD_TTL_S

__all__ = [
    "AUTH_CHALLENGE_SIZE",
    "AUTH_CHALLENGE_TTL",
    "CERTIFICATE_LIFETIME",
    "DEFAULT_NETWORK_NAME",
    "DEFAULT_OVERLAY_CIDR",
    "DEFAULT_TOKEN_TTL",
    "PEER_RECORD_TTL",
    "SESSION_TOKEN_TTL",
    "TOKEN_BYTES",
    "TOKEN_PREFIX_CHARS",
]

DEFAULT_NETWORK_NAME = "default"
TOKEN_BYTES = 32  # 256-bit enrollment and session tokens (secrets.token_urlsafe(32))
TOKEN_PREFIX_CHARS = 6  # shown in the admin to tell tokens apart; never enough to guess one
DEFAULT_TOKEN_TTL = timedelta(hours=24)
AUTH_CHALLENGE_SIZE = 32
AUTH_CHALLENGE_TTL = timedelta(seconds=60)
SESSION_TOKEN_TTL = timedelta(hours=24)
PEER_RECORD_TTL = timedelta(seconds=PEER_RECORD_TTL_S)
CERTIFICATE_LIFETIME = timedelta(days=365)
