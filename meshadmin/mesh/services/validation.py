"""Input checks shared by the services; each failure is an InvalidInput naming the field."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mldsa
from django.conf import settings

from nodeagent.protocol.constants import MLDSA87_PUBLIC_KEY_SIZE
from nodeagent.protocol.dnsname import MAX_SUFFIX, is_suffix
from nodeagent.protocol.endpoints import BadEndpoint, check_endpoint_ip

from .errors import InvalidInput

__all__ = [
    "allow_loopback_endpoints", "clean_dns_suffix", "clean_endpoint", "clean_endpoint_ip", "clean_label",
    "clean_port", "clean_public_key",
]

_MAX_LABEL_BYTES = 63  # the certificate's limit for names


def clean_label(value: str, field: str) -> str:
    value = (value or "").strip()
    encoded = value.encode("utf-8", "surrogatepass")
    if not 1 <= len(encoded) <= _MAX_LABEL_BYTES:
        raise InvalidInput(f"{field}: must be 1..{_MAX_LABEL_BYTES} bytes of UTF-8")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in value):
        raise InvalidInput(f"{field}: must not contain control characters")
    return value


def clean_dns_suffix(value: str, field: str = "dns_suffix") -> str:
    """A network's DNS suffix: a DNS name (labels joined by dots), lower-cased; "" for the default."""
    value = (value or "").strip().rstrip(".").lower()
    if value and not is_suffix(value):
        raise InvalidInput(f"{field}: must be a DNS name of labels (letters, digits, hyphens) joined by "
                           f"dots, at most {MAX_SUFFIX} characters, not ending in a number")
    return value


def clean_public_key(raw: bytes, field: str = "public_key") -> bytes:
    if len(raw) != MLDSA87_PUBLIC_KEY_SIZE:
        raise InvalidInput(
            f"{field}: an ML-DSA-87 public key is {MLDSA87_PUBLIC_KEY_SIZE} bytes, got {len(raw)}"
        )
    try:
        mldsa.MLDSA87PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidInput(f"{field}: not a valid ML-DSA-87 public key") from exc
    return bytes(raw)


def clean_endpoint_ip(value: str, field: str) -> str:
    """An address peers may be sent to (nodeagent.protocol.endpoints: no loopback, unspecified,
    link-local, multicast or broadcast address); loopback only with
    SHADOWMESH_ALLOW_LOOPBACK_ENDPOINTS (a lab where every agent runs on the server's host)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: not an IP address")
    try:
        return str(check_endpoint_ip(value, allow_loopback=allow_loopback_endpoints()))
    except BadEndpoint as exc:
        raise InvalidInput(f"{field}: {exc}") from None


def allow_loopback_endpoints() -> bool:
    return bool(getattr(settings, "SHADOWMESH_ALLOW_LOOPBACK_ENDPOINTS", False))


def clean_port(value: int, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise InvalidInput(f"{field}: must be a port number 1..65535")
    return value


def clean_endpoint(value: str, field: str = "endpoint") -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' with HOST an address peers may be sent to."""
    value = (value or "").strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise InvalidInput(f"{field}: must be IP:PORT")
    return clean_endpoint_ip(host, field), clean_port(int(port), field)
