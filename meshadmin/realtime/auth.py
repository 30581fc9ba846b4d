"""Agent authentication on the websocket: a session token in a header, or a signed fresh challenge.

The token (from POST /api/auth/verify) is read from the `Authorization: Bearer` header only,
never from the query string (which ends up in access logs). Without one, the consumer sends a
32-byte challenge as its first frame and the agent signs it with ML-DSA-87 under its own context,
shadowmesh/agent-auth/v1, bound to the purpose and to the network's CA
(nodeagent.protocol.auth.verify_agent_login), so the answer is worth nothing to /api/auth/verify.
Both paths end in `AgentIdentity` of an active node, or a refusal that is audited (never with
the token or signature in it; repeated refusals from one address are folded into one event with
a count).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshadmin.mesh.choices import AuditAction, NodeStatus
from meshadmin.mesh.models import Node
from meshadmin.mesh.services.audit import record_refusal
from meshadmin.mesh.services.auth import authenticate_session
from meshadmin.mesh.services.common import node_actor
from nodeagent.protocol.auth import BadAuthSignature, verify_agent_login

if TYPE_CHECKING:
    from asgiref.typing import WebSocketScope

__all__ = ["AgentIdentity", "AuthRefused", "authenticate_signature", "authenticate_signatures",
           "authenticate_token", "bearer_token"]

log = logging.getLogger(__name__)


class AuthRefused(Exception):
    """`revoked` tells the consumer which close code to use."""

    def __init__(self, detail: str, revoked: bool = False) -> None:
        super().__init__(detail)
        self.revoked = revoked


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    pk: int
    peer_id: str
    name: str
    network_id: int
    is_public: bool


def _identity(node: Node) -> AgentIdentity:
    return AgentIdentity(node.pk, node.peer_id, node.name, node.network_id, node.is_public)


def bearer_token(scope: WebSocketScope) -> str | None:
    """The bearer token from the Authorization header of the websocket handshake, if any."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _refuse(node: Node | None, peer_id: str, source_ip: str | None, reason: str) -> None:
    """Audited, folded with the same refusals from the same address (mesh/services/audit.py)."""
    record_refusal(AuditAction.AUTH_FAILED, reason=reason, channel="websocket",
                   actor=node_actor(node) if node else "anonymous", network=node.network if node else None,
                   object_type="node", object_id=peer_id[:64], source_ip=source_ip)


def authenticate_token(token: str, source_ip: str | None) -> AgentIdentity:
    node = authenticate_session(token)
    if node is None:
        _refuse(None, "", source_ip, "invalid or expired session token")
        raise AuthRefused("session token is invalid or expired")
    return _identity(node)


def authenticate_signature(peer_id: str, nonce: bytes, signature: bytes,
                           source_ip: str | None) -> AgentIdentity:
    result = authenticate_signatures([(peer_id, nonce, signature, source_ip)])[0]
    if isinstance(result, AuthRefused):
        raise result
    return result


def authenticate_signatures(requests: list[tuple[str, bytes, bytes, str | None]]
                            ) -> list[AgentIdentity | AuthRefused]:
    """The checks of many logins (peer id, nonce, signature, source address) with one query: one
    result per request, in order, each exactly what `authenticate_signature` gives alone (a
    refusal audited as it would be). realtime/batches.py sends a reconnect storm's logins here."""
    # what the check and the identity need: not the certificate (~7 KB) nor the network's other
    # columns, read on every login (a refusal reads what its audit entry needs on its own)
    nodes = {node.peer_id: node for node in (
        Node.objects.select_related("network")
        .only("pk", "peer_id", "name", "status", "public_key", "is_public", "network_id",
              "network__id", "network__ca_public_key")
        .filter(peer_id__in={peer_id for peer_id, _, _, _ in requests}))}
    return [_check(nodes.get(peer_id), peer_id, nonce, signature, source_ip)
            for peer_id, nonce, signature, source_ip in requests]


def _check(node: Node | None, peer_id: str, nonce: bytes, signature: bytes,
           source_ip: str | None) -> AgentIdentity | AuthRefused:
    if node is None:
        _refuse(None, peer_id, source_ip, "unknown peer")
        return AuthRefused("unknown peer")
    if node.status != NodeStatus.ACTIVE:
        _refuse(node, peer_id, source_ip, "revoked peer")
        return AuthRefused("this node has been revoked", revoked=True)
    try:
        verify_agent_login(bytes(node.public_key), bytes(node.network.ca_public_key), nonce, signature)
    except BadAuthSignature:  # this channel audits every kind as "bad signature"
        _refuse(node, peer_id, source_ip, "bad signature")
        return AuthRefused("signature does not verify")
    return _identity(node)
