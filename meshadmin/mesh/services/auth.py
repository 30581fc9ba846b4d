"""Node authentication: ML-DSA-87 challenge/response, then a hashed bearer session token.

A challenge is 32 random bytes bound to one node, valid for 60 s and spent by the first verify
attempt whatever its outcome (a conditional UPDATE, so two racing verifies cannot both use it).
The node signs the decoded challenge bytes with context "shadowmesh/auth/v1"; the check is
nodeagent.protocol.auth.verify_auth_signature. The websocket login signs another context over
other bytes (auth.verify_agent_login), so neither signature is accepted by the other path.
"""

from __future__ import annotations

import os
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from nodeagent.protocol.auth import BadAuthSignature, verify_auth_signature
from nodeagent.protocol.identity import PEER_ID_RE

from ..choices import AuditAction, NodeStatus
from ..constants import AUTH_CHALLENGE_SIZE, AUTH_CHALLENGE_TTL, SESSION_TOKEN_TTL
from ..models import AuthChallenge, Node, SessionToken
from ..secrets import hash_secret, new_token, token_prefix
from .audit import record_refusal
from .common import node_actor, record_audit
from .errors import NotAuthenticated

__all__ = ["authenticate_session", "issue_challenge", "purge_expired_credentials", "verify_challenge"]


def _refuse(peer_id: str, node: Node | None, source_ip: str | None, reason: str, detail: str):
    """Audited, folded with the same refusals from the same address (services/audit.py)."""
    record_refusal(
        AuditAction.AUTH_FAILED,
        reason=reason,
        actor=node_actor(node) if node is not None else "anonymous",
        network=node.network if node is not None else None,
        object_type="node",
        object_id=peer_id[:64],
        source_ip=source_ip,
    )
    return NotAuthenticated(detail)


def _active_node(peer_id: str, source_ip: str | None) -> Node:
    if not PEER_ID_RE.match(peer_id or ""):
        raise _refuse(str(peer_id), None, source_ip, "malformed peer id", "unknown peer")
    node = Node.objects.select_related("network").filter(peer_id=peer_id).first()
    if node is None:
        raise _refuse(peer_id, None, source_ip, "unknown peer", "unknown peer")
    if node.status != NodeStatus.ACTIVE:
        raise _refuse(peer_id, node, source_ip, "revoked peer", "this node has been revoked")
    return node


def issue_challenge(peer_id: str, *, source_ip: str | None = None) -> tuple[bytes, datetime]:
    node = _active_node(peer_id, source_ip)
    challenge = os.urandom(AUTH_CHALLENGE_SIZE)
    expires_at = timezone.now() + AUTH_CHALLENGE_TTL
    AuthChallenge.objects.create(
        node=node, challenge_hash=hash_secret("challenge", challenge), expires_at=expires_at
    )
    return challenge, expires_at


def verify_challenge(
    peer_id: str, challenge: bytes, signature: bytes, *, source_ip: str | None = None
) -> tuple[str, datetime]:
    """Returns (session token plaintext, expiry). Raises NotAuthenticated (audited) otherwise."""
    node = _active_node(peer_id, source_ip)
    now = timezone.now()
    challenge_hash = hash_secret("challenge", challenge)
    spent = AuthChallenge.objects.filter(
        node=node, challenge_hash=challenge_hash, used_at=None, expires_at__gt=now
    ).update(used_at=now)
    if spent != 1:
        row = AuthChallenge.objects.filter(challenge_hash=challenge_hash).first()
        if row is None:
            reason = "unknown challenge"
        elif row.node_id != node.pk:
            reason = "challenge issued to another peer"
        elif row.used_at is not None:
            reason = "challenge already used"
        else:
            reason = "challenge expired"
        raise _refuse(peer_id, node, source_ip, reason, "challenge is unknown, used or expired")
    try:
        verify_auth_signature(bytes(node.public_key), challenge, signature)
    except BadAuthSignature as exc:  # audited with its reason: wrong length or bad signature
        raise _refuse(peer_id, node, source_ip, str(exc), "signature does not verify") from None
    token = new_token()
    expires_at = now + SESSION_TOKEN_TTL
    with transaction.atomic():
        SessionToken.objects.create(
            node=node,
            token_hash=hash_secret("session", token),
            prefix=token_prefix(token),
            expires_at=expires_at,
            source_ip=source_ip,
        )
        record_audit(
            AuditAction.AUTH_SUCCEEDED,
            actor=node_actor(node),
            network=node.network,
            obj=node,
            source_ip=source_ip,
            session_prefix=token_prefix(token),
        )
    return token, expires_at


def authenticate_session(token: str) -> Node | None:
    """The active node a bearer session token belongs to, or None."""
    if not token or len(token) > 256:
        return None
    session = (
        SessionToken.objects.select_related("node", "node__network")
        .filter(token_hash=hash_secret("session", token), expires_at__gt=timezone.now())
        .first()
    )
    if session is None or session.node.status != NodeStatus.ACTIVE:
        return None
    return session.node


def purge_expired_credentials(now=None) -> int:
    """Delete expired challenges and sessions (they are refused anyway); returns how many rows."""
    now = now or timezone.now()
    challenges, _ = AuthChallenge.objects.filter(expires_at__lte=now).delete()
    sessions, _ = SessionToken.objects.filter(expires_at__lte=now).delete()
    return challenges + sessions
