"""Bearer credentials of the API. Never logged.

- NodeSessionAuth: a node's session token (from /api/auth/verify), for the discovery operations.
- OperatorKeyAuth: an operator API key (services/apikeys.py), for the operator operations. A
  read-only key may call GET operations only (403 otherwise, audited).

Failed credentials of either kind count against the caller's address ("bearer" limit, the same
number as /api/auth/*): once over it, the address gets 429 without a lookup until the minute ends.
Good credentials are not counted."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security import HttpBearer

from meshadmin.client_address import request_client_ip
from meshadmin.mesh.models import ApiKey, Node
from meshadmin.mesh.services.apikeys import authenticate_api_key
from meshadmin.mesh.services.auth import authenticate_session
from meshadmin.mesh.services.errors import NotAuthenticated
from meshadmin.mesh.services.ratelimit import RateLimited, exceeded, hit

__all__ = [
    "READ_METHODS", "BearerRefused", "NodeSessionAuth", "OperatorKeyAuth", "request_key", "request_node",
]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BearerRefused(NotAuthenticated):
    """401 for a missing or refused bearer credential: the response names the scheme
    (WWW-Authenticate: Bearer)."""


def _refuse_if_over_limit(ip: str | None) -> None:
    if exceeded("bearer", ip):
        raise RateLimited("too many requests with a bad bearer token from this address; "
                          "try again in a minute")


class NodeSessionAuth(HttpBearer):
    """Sets request.auth to the authenticated, active Node."""

    openapi_description = "a node's session token from /api/auth/verify"

    def authenticate(self, request: HttpRequest, token: str) -> Node | None:
        ip = request_client_ip(request)
        _refuse_if_over_limit(ip)
        node = authenticate_session(token)
        if node is None:
            hit("bearer", ip)
        return node


class OperatorKeyAuth(HttpBearer):
    """Sets request.auth to the operator's ApiKey. The scope needed follows the method: GET, HEAD
    and OPTIONS read, anything else writes. Every refusal is a JSON 401, 403 or 429."""

    openapi_description = (
        "an operator API key (manage.py createapikey, or the dashboard's API keys page): "
        "Authorization: Bearer smk_…; read-only keys may only read"
    )

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        scheme, _, token = (request.headers.get(self.header) or "").partition(" ")
        if scheme.lower() != self.openapi_scheme or not token.strip():
            raise BearerRefused("missing API key: send Authorization: Bearer <key>")
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        ip = request_client_ip(request)
        _refuse_if_over_limit(ip)
        try:
            return authenticate_api_key(token, write=request.method not in READ_METHODS, source_ip=ip)
        except NotAuthenticated as exc:
            hit("bearer", ip)
            raise BearerRefused(exc.detail) from None


def request_node(request: HttpRequest) -> Node:
    """The node NodeSessionAuth authenticated (it runs before the operation)."""
    node = getattr(request, "auth", None)
    if not isinstance(node, Node):
        raise BearerRefused("missing or invalid session token")
    return node


def request_key(request: HttpRequest) -> ApiKey:
    """The operator API key OperatorKeyAuth authenticated (it runs before the operation)."""
    key = getattr(request, "auth", None)
    if not isinstance(key, ApiKey):
        raise BearerRefused("missing API key: send Authorization: Bearer <key>")
    return key
