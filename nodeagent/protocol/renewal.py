"""Certificate renewal: when an agent asks, and which answer it keeps. Pure (`now` is an argument).

An enrolled agent asks its server for a new certificate (websocket `renew`, answered by
`certificate`) once two thirds of its certificate's lifetime have passed, and again every
`retry_interval` until it gets one; an agent whose certificate has already expired asks before it
starts its tunnel. It keeps the answer only if it is a certificate of its network's CA, valid now,
for the same key (so the same peer id), overlay address, prefix and network, that lasts at least
as long as the one it holds. Name and flags may change (a renamed node gets its new name).
"""

from __future__ import annotations

from .cert import Certificate, CertificateError, verify_certificate

__all__ = [
    "RenewalRefused",
    "check_renewed",
    "is_renewal",
    "renew_at",
    "retry_interval",
    "wants_renewal",
]

RENEW_FRACTION = (2, 3)  # ask at not_before + 2/3 of the lifetime
RETRY_MAX_S = 60.0
RETRY_MIN_S = 1.0


class RenewalRefused(ValueError):
    """The server's answer is not a certificate this node may use; str() says why."""


def renew_at(cert: Certificate) -> int:
    """Unix second from which the holder of `cert` asks for a new one."""
    num, den = RENEW_FRACTION
    return cert.not_before + (cert.not_after - cert.not_before) * num // den


def wants_renewal(cert: Certificate, now: float) -> bool:
    return now >= renew_at(cert)


def retry_interval(cert: Certificate) -> float:
    """Seconds between two `renew` requests that got no new certificate: a thirtieth of the
    lifetime, within 1..60 s (a year-long certificate asks every minute once it is due)."""
    return max(RETRY_MIN_S, min(RETRY_MAX_S, (cert.not_after - cert.not_before) / 30))


def check_renewed(current: Certificate, data: bytes, ca_public_key: bytes, now: int) -> Certificate:
    """The renewed certificate in `data` if it may replace `current`; RenewalRefused otherwise."""
    try:
        new = verify_certificate(data, ca_public_key, now)
    except CertificateError as exc:
        raise RenewalRefused(f"renewed certificate rejected: {exc}") from None
    if new.public_key != current.public_key or new.peer_id != current.peer_id:
        raise RenewalRefused("renewed certificate is for another key")
    where = (current.overlay_ip, current.prefix_len, current.network)
    if (new.overlay_ip, new.prefix_len, new.network) != where:
        raise RenewalRefused("renewed certificate changes the overlay address or network")
    if new.not_after < current.not_after:
        raise RenewalRefused("renewed certificate expires before the current one")
    return new


def is_renewal(current: Certificate, new: Certificate) -> bool:
    """False when the server answered with the certificate we already hold (not due yet there)."""
    return new.tbs != current.tbs
