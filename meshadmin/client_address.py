"""The client's address, as the rate limits and the audit log know it.

It is the TCP peer the ASGI server saw, unless that peer is a trusted reverse proxy
(SHADOWMESH_TRUSTED_PROXIES): then it is the address the proxy appended to X-Forwarded-For.
The header is read from the right: each hop that is itself a trusted proxy hands over to the
address it received the request from, and the first hop that is not trusted is the client.
Anything a client writes into X-Forwarded-For lies to the left of what our proxy appended, so it
is never reached, and a request that does not come through a trusted proxy is keyed on its own
TCP peer whatever its headers say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asgiref.typing import HTTPScope, WebSocketScope

__all__ = [
    "address_in", "client_address", "is_trusted_proxy", "parse_trusted_proxies", "request_client_ip",
    "scope_client_ip",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted_proxies(items: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or prefixes ("127.0.0.1", "10.0.0.0/8", "::1"); ValueError naming a bad one."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or prefix") from None
    return tuple(out)


def _address(text: str | None) -> Address | None:
    """An address from REMOTE_ADDR or one X-Forwarded-For entry ("ip", "ip:port", "[v6]:port")."""
    text = (text or "").strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: Address, trusted: Sequence[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def address_in(text: str | None, prefixes: Sequence[Network]) -> bool:
    """Whether the address `text` (an IPv4-mapped IPv6 one counts as IPv4) lies in one of
    `prefixes`; never for text that is no address."""
    addr = _address(text)
    return addr is not None and _trusted(addr, prefixes)


def is_trusted_proxy(peer: str | None, trusted: Sequence[Network]) -> bool:
    """Whether the TCP peer `peer` is one of the trusted reverse proxies."""
    return address_in(peer, trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client address for a request whose TCP peer is `peer` and whose X-Forwarded-For (all
    the header's values joined with commas) is `forwarded_for`; None if `peer` is not an address."""
    addr = _address(peer)
    if addr is None:
        return None
    if trusted and forwarded_for:
        for hop in reversed(forwarded_for.split(",")):
            if not _trusted(addr, trusted):
                break
            previous = _address(hop)
            if previous is None:  # garbage left of our proxy's entry: stop at the last good hop
                break
            addr = previous
    return str(addr)


def _trusted_setting() -> Sequence[Network]:
    from django.conf import settings

    return getattr(settings, "SHADOWMESH_TRUSTED_PROXIES", ())


def request_client_ip(request) -> str | None:
    """The client address of a Django request."""
    meta = request.META
    return client_address(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"), _trusted_setting())


def scope_client_ip(scope: WebSocketScope | HTTPScope) -> str | None:
    """The client address of an ASGI scope (a websocket's, or an HTTP request's)."""
    client = scope.get("client")
    peer = client[0] if client else None
    values = [v.decode("latin-1") for k, v in scope.get("headers") or () if k.lower() == b"x-forwarded-for"]
    return client_address(peer, ",".join(values) or None, _trusted_setting())
