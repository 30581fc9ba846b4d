"""Proxy headers, believed only from the reverse proxy in front of Daphne.

A TLS proxy (docker/nginx.conf) terminates https/wss and passes on who the client was
(`X-Forwarded-For`) and how it came (`X-Forwarded-Proto`). Anyone can send those headers, so this
ASGI middleware believes them only when the connection itself comes from one of
SHADOWMESH_TRUSTED_PROXIES (addresses or networks):

- from a trusted proxy: the scope's client address becomes the nearest address in X-Forwarded-For
  that is not itself a trusted proxy (walking from the right: the entries on the left are whatever
  the client claimed), and the scheme becomes https/wss when X-Forwarded-Proto says https. The
  rate limits, audit rows and the "observed" endpoint of an agent then see the real client.
- from anyone else: both headers are removed from the scope, so nothing behind (Django's
  SECURE_PROXY_SSL_HEADER, a view) can be fooled by them.

HTTP and websocket connections alike; other scope types pass through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["ProxyHeadersMiddleware", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto")


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """'10.0.0.2', '10.250.0.0/29', '::1' -> networks; ValueError names a bad item."""
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(out)


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


class ProxyHeadersMiddleware:
    def __init__(self, app, trusted: Iterable[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def _is_proxy(self, address) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    async def __call__(self, scope, receive, send):
        if scope.get("type") not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        client = scope.get("client")
        peer = _address(client[0]) if client else None
        headers = scope.get("headers") or []
        if not self._is_proxy(peer):
            if any(name.lower() in _FORWARDED for name, _ in headers):
                scope = dict(scope, headers=[(n, v) for n, v in headers if n.lower() not in _FORWARDED])
            return await self.app(scope, receive, send)
        forwarded_for, proto = [], None
        for name, value in headers:
            name = name.lower()
            if name == b"x-forwarded-for":
                forwarded_for += value.decode("latin-1").split(",")
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[0].strip().lower()
        changes = {}
        for item in reversed(forwarded_for):
            address = _address(item)
            if address is None:
                break  # garbage: keep the last address we could trust
            if not self._is_proxy(address):
                changes["client"] = (str(address), 0)
                break
        if proto in ("http", "https"):
            secure = proto == "https"
            changes["scheme"] = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
        return await self.app(dict(scope, **changes) if changes else scope, receive, send)
