"""The operator operations: networks, nodes, enrollment tokens and routes, under an operator API
key (auth.OperatorKeyAuth; docs/api.md).

Each write calls the service the dashboard calls (meshadmin/mesh/services/), so it is audited the
same way (actor `apikey:<prefix>`) and pushed to the nodes the same way. Endpoints parse, call and
serialize; none writes a row itself. A malformed value is 400 naming the field; a well-formed id or
name that names nothing is 404 (in a body too, the detail naming the field: the request was valid,
its object is absent); a write that would change nothing or that the mesh refuses is 409."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Path, Query, Router, Status

from meshadmin.mesh.choices import NodeStatus
from meshadmin.mesh.models import EnrollmentToken, Network, Node, Route
from meshadmin.mesh.services.common import apikey_actor
from meshadmin.mesh.services.errors import Conflict
from meshadmin.mesh.services.exits import EXIT_PREFIXES, select_exit_node
from meshadmin.mesh.services.nodes import delete_node, rename_node, revoke_node
from meshadmin.mesh.services.routes import approve_route, create_route, delete_route, set_routes
from meshadmin.mesh.services.tokens import create_token, revoke_token
from meshadmin.telemetry import queries as telemetry

from .auth import OperatorKeyAuth, request_key
from .operator_schemas import (
    PEER_ID_PATTERN,
    NetworkOut,
    NodeOut,
    NodePatchIn,
    RouteCreateIn,
    RouteOut,
    RoutesSetIn,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
)
from .schemas import ErrorOut
from .scope import default_network, find_network, find_node, in_reach, scoped

__all__ = ["PeerIdPath", "exit_offer", "key_actor", "router"]

router = Router(auth=OperatorKeyAuth())

_READ_ERRORS: dict[int, type[ErrorOut]] = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 429: ErrorOut}
_WRITE_ERRORS: dict[int, type[ErrorOut]] = {**_READ_ERRORS, 403: ErrorOut, 409: ErrorOut}

PeerIdPath = Path(..., pattern=PEER_ID_PATTERN, description="the node's peer id")
Json = dict[str, Any]


def key_actor(request: HttpRequest) -> str:
    return apikey_actor(request_key(request))


# --------------------------------------------------------------------------- networks


@router.get("/networks", response={200: list[NetworkOut], **_READ_ERRORS}, tags=["networks"])
def list_networks(request: HttpRequest) -> list[Json]:
    """Every network, with its count of active nodes."""
    counted = Network.objects.annotate(active=Count("nodes", filter=Q(nodes__status=NodeStatus.ACTIVE)))
    rows = scoped(request, counted, None, "pk")
    return [{"name": n.name, "overlay_cidr": n.overlay_cidr, "serial": n.serial, "nodes": n.active,
             "created_at": n.created_at} for n in rows.order_by("name")]


# --------------------------------------------------------------------------- nodes


def exit_offer(approvals: list[bool]) -> str:
    """A node's exit-node state from the approvals of its default routes (services/exits.py)."""
    if not approvals:
        return "none"
    return "approved" if all(approvals) else "pending"


def _nodes_out(nodes: list[Node], now: datetime) -> list[Json]:
    presence = telemetry.presence([n.peer_id for n in nodes])
    routes: dict[int, list[Json]] = {}
    offers: dict[int, list[bool]] = {}
    for route in Route.objects.filter(via__in=[n.pk for n in nodes]).order_by("prefix"):
        if route.prefix in EXIT_PREFIXES:
            offers.setdefault(route.via_id, []).append(route.approved)
        else:
            routes.setdefault(route.via_id, []).append(
                {"id": route.pk, "prefix": route.prefix, "approved": route.approved})
    exits = dict(Node.objects.filter(pk__in={n.use_exit_id for n in nodes if n.use_exit_id is not None})
                 .values_list("pk", "peer_id"))
    out = []
    for n in nodes:
        seen = presence.get(n.peer_id, telemetry.OFFLINE)
        live = n.record_is_live(now) and n.endpoint_ip is not None
        out.append({
            "peer_id": n.peer_id, "name": n.name, "network": n.network.name, "status": n.status,
            "overlay_ip": n.overlay_ip, "online": n.status == NodeStatus.ACTIVE and seen.online,
            "last_seen": max((t for t in (seen.last_seen, n.last_seen) if t is not None), default=None),
            "is_public": n.is_public, "is_relay": n.is_relay, "ephemeral": n.ephemeral,
            "agent_version": n.agent_version,
            "enrolled_at": n.enrolled_at, "revoked_at": n.revoked_at,
            "certificate_expires_at": n.certificate_expires_at,
            "endpoint": {"ip": n.endpoint_ip, "port": n.control_port, "udp_port": n.udp_port,
                         "is_public": n.advertised_public} if live else None,
            "routes": routes.get(n.pk, []),
            "exit_node": exit_offer(offers.get(n.pk, [])),
            "use_exit": exits.get(n.use_exit_id) if n.use_exit_id is not None else None,
        })
    return out


def _node_out(node: Node) -> Json:
    return _nodes_out([node], timezone.now())[0]


@router.get("/nodes", response={200: list[NodeOut], **_READ_ERRORS}, tags=["nodes"])
def list_nodes(
    request: HttpRequest,
    network: str | None = Query(None, description="only this network's nodes"),
    status: Literal["active", "revoked"] | None = Query(None, description="only nodes in this state"),
) -> list[Json]:
    """Every node (of one network, in one state), by name."""
    rows: QuerySet[Node] = scoped(
        request, Node.objects.select_related("network").order_by("network__name", "name", "peer_id"), network)
    if status is not None:
        rows = rows.filter(status=status)
    return _nodes_out(list(rows), timezone.now())


@router.get("/nodes/{peer_id}", response={200: NodeOut, **_READ_ERRORS}, tags=["nodes"])
def get_node(request: HttpRequest, peer_id: str = PeerIdPath) -> Json:
    return _node_out(find_node(request, peer_id))


@router.patch("/nodes/{peer_id}", response={200: NodeOut, **_WRITE_ERRORS}, tags=["nodes"])
def update_node(request: HttpRequest, payload: NodePatchIn, peer_id: str = PeerIdPath) -> Json:
    """Rename a node (its peers see the new name with their next netmap), and choose the exit node
    it sends its internet traffic through (`exit_node`: a peer id, or null for none)."""
    node = find_node(request, peer_id)
    exit_node: Node | None = None
    if payload.exit_node is not None:
        exit_node = find_node(request, payload.exit_node, "exit_node: no such node")
    if payload.name is not None:
        rename_node(node, payload.name, actor=key_actor(request))
    if "exit_node" in payload.model_fields_set:
        select_exit_node(node, exit_node, actor=key_actor(request))
    return _node_out(node)


@router.post("/nodes/{peer_id}/revoke", response={200: NodeOut, **_WRITE_ERRORS}, tags=["nodes"])
def revoke(request: HttpRequest, peer_id: str = PeerIdPath) -> Json:
    """Revoke a node for good: its key is blocked, its address freed, every peer drops it."""
    node = find_node(request, peer_id)
    revoke_node(node, actor=key_actor(request))
    return _node_out(node)


@router.delete("/nodes/{peer_id}", response={204: None, **_WRITE_ERRORS}, tags=["nodes"])
def delete(request: HttpRequest, peer_id: str = PeerIdPath) -> Status[None]:
    """Delete an active node's record (its key may enroll again); a revoked node stays (409)."""
    delete_node(find_node(request, peer_id), actor=key_actor(request))
    return Status(204, None)


@router.put("/nodes/{peer_id}/routes", response={200: list[RouteOut], **_WRITE_ERRORS},
            tags=["nodes", "routes"])
def put_node_routes(request: HttpRequest, payload: RoutesSetIn, peer_id: str = PeerIdPath) -> list[Json]:
    """Set the subnet routes through a node: after the call they are exactly `prefixes`."""
    node = find_node(request, peer_id)
    routes = set_routes(node, list(payload.prefixes), approved=payload.approved, actor=key_actor(request))
    return [_route_out(r, node) for r in routes]


# --------------------------------------------------------------------------- enrollment tokens


def _token_out(token: EnrollmentToken, now: datetime) -> Json:
    if token.revoked_at is not None:
        state = "revoked"
    elif token.uses_left <= 0:
        state = "used"
    elif token.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    return {"id": token.pk, "prefix": token.prefix, "network": token.network.name, "uses": token.max_uses,
            "uses_left": token.uses_left, "is_public": token.is_public, "ephemeral": token.ephemeral,
            "state": state,
            "created_at": token.created_at, "expires_at": token.expires_at, "revoked_at": token.revoked_at}


@router.get("/tokens", response={200: list[TokenOut], **_READ_ERRORS}, tags=["tokens"])
def list_tokens(
    request: HttpRequest,
    network: str | None = Query(None, description="only this network's tokens"),
    active: bool | None = Query(None, description="true: only tokens that can still enroll a node; "
                                                    "false: only those that cannot"),
) -> list[Json]:
    """Enrollment tokens, newest first (never the tokens themselves: only their prefixes)."""
    now = timezone.now()
    rows: QuerySet[EnrollmentToken] = scoped(
        request, EnrollmentToken.objects.select_related("network").order_by("-created_at", "-id"), network)
    usable = Q(revoked_at=None, uses_left__gt=0, expires_at__gt=now)
    if active is True:
        rows = rows.filter(usable)
    elif active is False:
        rows = rows.exclude(usable)
    return [_token_out(t, now) for t in rows]


@router.post("/tokens", response={201: TokenCreatedOut, **_WRITE_ERRORS}, tags=["tokens"])
def post_token(request: HttpRequest, payload: TokenCreateIn) -> Status[Json]:
    """Create an enrollment token. The response holds the token itself, this once."""
    actor = key_actor(request)
    network = find_network(request, payload.network) or default_network(request, actor)
    token, plaintext = create_token(network, uses=payload.uses, ttl=timedelta(seconds=payload.expires_in),
                                    is_public=payload.is_public, ephemeral=payload.ephemeral, actor=actor)
    return Status(201, {**_token_out(token, timezone.now()), "token": plaintext})


@router.post("/tokens/{token_id}/revoke", response={200: TokenOut, **_WRITE_ERRORS}, tags=["tokens"])
def post_token_revoke(request: HttpRequest, token_id: int = Path(..., ge=1, le=2**63 - 1)) -> Json:
    """Revoke an enrollment token: it enrolls no more nodes (those it enrolled stay)."""
    found = EnrollmentToken.objects.select_related("network").filter(pk=token_id).first()
    token = in_reach(request, found, found.network_id if found is not None else None, "no such token")
    if token.revoked_at is not None:
        raise Conflict(f"token {token.prefix}… is already revoked")
    return _token_out(revoke_token(token, actor=key_actor(request)), timezone.now())


# --------------------------------------------------------------------------- routes


def _route_out(route: Route, via: Node | None = None) -> Json:
    via = via or route.via
    return {"id": route.pk, "network": via.network.name, "prefix": route.prefix, "via": via.peer_id,
            "via_name": via.name, "approved": route.approved, "created_at": route.created_at}


def _route(request: HttpRequest, route_id: int) -> Route:
    route = Route.objects.select_related("via", "via__network").filter(pk=route_id).first()
    return in_reach(request, route, route.network_id if route is not None else None, "no such route")


RouteIdPath = Path(..., ge=1, le=2**63 - 1, description="the route's id")


@router.get("/routes", response={200: list[RouteOut], **_READ_ERRORS}, tags=["routes"])
def list_routes(
    request: HttpRequest,
    network: str | None = Query(None, description="only this network's routes"),
    approved: bool | None = Query(None, description="only approved (true) or pending (false) routes"),
) -> list[Json]:
    """Every route (subnet routes and exit nodes' default routes), pending ones first."""
    rows: QuerySet[Route] = scoped(request, Route.objects.select_related("via", "via__network").order_by(
        "approved", "network__name", "prefix", "id"), network)
    if approved is not None:
        rows = rows.filter(approved=approved)
    return [_route_out(r) for r in rows]


@router.post("/routes", response={201: RouteOut, **_WRITE_ERRORS}, tags=["routes"])
def post_route(request: HttpRequest, payload: RouteCreateIn) -> Status[Json]:
    """Add a subnet route through a node, pending unless `approved`."""
    via = find_node(request, payload.via, "via: no such node")
    route = create_route(via, payload.prefix, approved=payload.approved, actor=key_actor(request))
    return Status(201, _route_out(route, via))


@router.post("/routes/{route_id}/approve", response={200: RouteOut, **_WRITE_ERRORS}, tags=["routes"])
def post_route_approve(request: HttpRequest, route_id: int = RouteIdPath) -> Json:
    """Approve a pending route: from the next push on, traffic for the subnet goes through the node."""
    route = _route(request, route_id)
    if route.approved:
        raise Conflict(f"{route.prefix} via {route.via.name} is already approved")
    return _route_out(approve_route(route, actor=key_actor(request)), route.via)


@router.delete("/routes/{route_id}", response={204: None, **_WRITE_ERRORS}, tags=["routes"])
def delete_route_op(request: HttpRequest, route_id: int = RouteIdPath) -> Status[None]:
    """Remove a route (pending or approved)."""
    delete_route(_route(request, route_id), actor=key_actor(request))
    return Status(204, None)
