"""X-Forwarded-Proto, believed only from the reverse proxy in front of Daphne.

A TLS proxy (docker/nginx.conf) terminates https/wss and says so in `X-Forwarded-Proto`. Anyone
can send that header, so this ASGI middleware believes it only when the connection itself comes
from one of SHADOWMESH_TRUSTED_PROXIES:

- from a trusted proxy, "https" makes the scope's scheme https (wss for a websocket) and "http"
  makes it http, so Django's secure-request checks (SSL redirect, secure cookies, CSRF) see what
  the client used;
- from anyone else, the header is removed from the scope, so nothing behind (Django's
  SECURE_PROXY_SSL_HEADER, a view) can be fooled by it.

Who the client was (`X-Forwarded-For`) is meshadmin/client_address.py's business, with the same
list of trusted proxies; this module leaves the scope's client and that header alone.
HTTP and websocket connections alike; other scope types pass through.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshadmin.client_address import is_trusted_proxy

__all__ = ["ForwardedProtoMiddleware"]

_HEADER = b"x-forwarded-proto"


class ForwardedProtoMiddleware:
    def __init__(self, app, trusted: Sequence) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def _from_proxy(self, scope) -> bool:
        client = scope.get("client")
        return is_trusted_proxy(client[0] if client else None, self.trusted)

    async def __call__(self, scope, receive, send):
        if scope.get("type") not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        if not any(name.lower() == _HEADER for name, _ in headers):
            return await self.app(scope, receive, send)
        if not self._from_proxy(scope):
            scope = dict(scope, headers=[(n, v) for n, v in headers if n.lower() != _HEADER])
            return await self.app(scope, receive, send)
        proto = next(v for n, v in headers if n.lower() == _HEADER).decode("latin-1")
        proto = proto.split(",")[0].strip().lower()
        if proto in ("http", "https"):
            secure = proto == "https"
            scheme = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
            scope = dict(scope, scheme=scheme)
        return await self.app(scope, receive, send)
