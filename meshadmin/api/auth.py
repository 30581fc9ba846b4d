"""Bearer session tokens for nodes (from /api/auth/verify). Never logged."""

from __future__ import annotations

from ninja.security import HttpBearer

from meshadmin.client_address import request_client_ip
from meshadmin.mesh.services.auth import authenticate_session
from meshadmin.mesh.services.ratelimit import RateLimited, exceeded, hit

__all__ = ["NodeSessionAuth"]


class NodeSessionAuth(HttpBearer):
    """Sets request.auth to the authenticated, active Node.

    Failed tokens count against the caller's address ("bearer" limit, the same number as
    /api/auth/*): once over it, the address gets 429 without a token lookup until the minute ends.
    Good tokens are not counted."""

    def authenticate(self, request, token):
        ip = request_client_ip(request)
        if exceeded("bearer", ip):
            raise RateLimited("too many requests with a bad session token from this address; "
                              "try again in a minute")
        node = authenticate_session(token)
        if node is None:
            hit("bearer", ip)
        return node
