"""Bearer session tokens for nodes (from /api/auth/verify). Never logged."""

from __future__ import annotations

from ninja.security import HttpBearer

from meshadmin.mesh.services.auth import authenticate_session

__all__ = ["NodeSessionAuth"]


class NodeSessionAuth(HttpBearer):
    """Sets request.auth to the authenticated, active Node."""

    def authenticate(self, request, token):
        return authenticate_session(token)
