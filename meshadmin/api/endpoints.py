"""Endpoints: parse (schemas) -> service -> serialize. No endpoint writes a row itself."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from meshadmin.client_address import request_client_ip
from meshadmin.mesh.models import Node
from meshadmin.mesh.services import auth as auth_service
from meshadmin.mesh.services import enrollment, peers
from meshadmin.mesh.services.ratelimit import check_rate
from nodeagent.protocol.identity import PEER_ID_RE

from .auth import NodeSessionAuth, request_node
from .schemas import (
    ChallengeIn,
    ChallengeOut,
    EnrollIn,
    EnrollOut,
    ErrorOut,
    PeerOut,
    RegisterIn,
    VerifyIn,
    VerifyOut,
    b64,
)

__all__ = ["router"]

router = Router()
node_session = NodeSessionAuth()

_ERRORS = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    409: ErrorOut,
    413: ErrorOut,
    429: ErrorOut,
}


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the TCP peer, or the client behind a trusted proxy."""
    return request_client_ip(request)


def client_port(request: HttpRequest) -> int | None:
    try:
        port = int(request.META.get("REMOTE_PORT") or 0)
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def _check_auth_rate(ip: str | None, peer_id: str) -> None:
    """Both budgets of /api/auth/* are the caller's own: per client address, and per client address
    and named peer id. Nothing is counted per peer id from any address: peer ids are public, and a
    budget every address shares would let anyone lock a node out of authentication."""
    check_rate("auth", ip)
    if PEER_ID_RE.match(peer_id):
        check_rate("auth_peer", f"{ip}/{peer_id}", what="for this peer id from this address")


def _peer_out(node: Node) -> dict[str, Any]:
    return {
        "peer_id": node.peer_id,
        "name": node.name,
        "overlay_ip": node.overlay_ip,
        "ip": node.endpoint_ip,
        "port": node.control_port,
        "udp_port": node.udp_port,
        "is_public": node.advertised_public,
        "public_key": b64(bytes(node.public_key)),
        "last_seen": node.last_seen,
        "expires_at": node.record_expires_at,
    }


@router.post("/enroll", response={201: EnrollOut, **_ERRORS}, auth=None, tags=["enrollment"])
def enroll(request: HttpRequest, payload: EnrollIn) -> Status[dict[str, Any]]:
    """Spend an enrollment token: the node gets an overlay IP and a CA-signed certificate."""
    ip = client_ip(request)
    check_rate("enroll", ip)
    result = enrollment.enroll(
        token=payload.token,
        name=payload.name,
        public_key=payload.public_key,
        endpoint=payload.endpoint,
        is_public=payload.is_public,
        source_ip=ip,
    )
    return Status(
        201,
        {
            "peer_id": result.node.peer_id,
            "overlay_ip": result.node.overlay_ip,
            "certificate": b64(result.certificate),
            "ca_public_key": b64(result.ca_public_key),
            "network": result.network_name,
        },
    )


@router.post("/auth/challenge", response={200: ChallengeOut, **_ERRORS}, auth=None, tags=["auth"])
def auth_challenge(request: HttpRequest, payload: ChallengeIn) -> dict[str, Any]:
    """A 32-byte challenge for this peer, valid 60 s, single use."""
    ip = client_ip(request)
    _check_auth_rate(ip, payload.peer_id)
    challenge, expires_at = auth_service.issue_challenge(payload.peer_id, source_ip=ip)
    return {"challenge": b64(challenge), "expires_at": expires_at}


@router.post("/auth/verify", response={200: VerifyOut, **_ERRORS}, auth=None, tags=["auth"])
def auth_verify(request: HttpRequest, payload: VerifyIn) -> dict[str, Any]:
    """Check the ML-DSA-87 signature (context shadowmesh/auth/v1) and open a session."""
    ip = client_ip(request)
    _check_auth_rate(ip, payload.peer_id)
    token, expires_at = auth_service.verify_challenge(
        payload.peer_id, payload.challenge, payload.signature, source_ip=ip
    )
    return {"session_token": token, "expires_at": expires_at}


@router.post("/peers/register", response={200: PeerOut, **_ERRORS}, auth=node_session, tags=["discovery"])
def register_peer(request: HttpRequest, payload: RegisterIn) -> dict[str, Any]:
    """Store the calling node's own endpoint record (TTL 24 h)."""
    node = peers.register_peer(
        request_node(request),
        ip=payload.ip,
        port=payload.port,
        udp_port=payload.udp_port,
        is_public=payload.is_public,
        observed_ip=client_ip(request),
        observed_port=client_port(request),
    )
    return _peer_out(node)


@router.get("/peers/{peer_id}", response={200: PeerOut, **_ERRORS}, auth=node_session, tags=["discovery"])
def lookup_peer(request: HttpRequest, peer_id: str) -> dict[str, Any]:
    """The live record of a peer in the caller's network; 404 when absent or expired."""
    return _peer_out(peers.lookup_peer(request_node(request), peer_id))
