"""Exit nodes in the operator API (services/exits.py; docs/api.md#exit-nodes): list them, offer a
node as one, approve or remove it, and choose the exit node a node uses (PATCH /api/nodes/<peer id>
with `exit_node`, operator.py). Like the dashboard's buttons, each write is audited and pushed."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Status

from meshadmin.mesh.models import Node, Route
from meshadmin.mesh.services.errors import Conflict
from meshadmin.mesh.services.exits import (
    EXIT_PREFIXES,
    advertise_exit_node,
    approve_exit_node,
    remove_exit_node,
)

from .auth import OperatorKeyAuth
from .operator import PeerIdPath, exit_offer, key_actor
from .operator_schemas import ExitNodeOut, ExitOfferIn
from .schemas import ErrorOut
from .scope import find_node, scoped

__all__ = ["router"]

router = Router(auth=OperatorKeyAuth(), tags=["exit nodes"])

_READ_ERRORS: dict[int, type[ErrorOut]] = {400: ErrorOut, 401: ErrorOut, 404: ErrorOut, 429: ErrorOut}
_WRITE_ERRORS: dict[int, type[ErrorOut]] = {**_READ_ERRORS, 403: ErrorOut, 409: ErrorOut}
Json = dict[str, Any]


def _exits_out(nodes: list[Node]) -> list[Json]:
    offers: dict[int, list[bool]] = {}
    for via_id, approved in Route.objects.filter(via__in=nodes, prefix__in=EXIT_PREFIXES).values_list(
            "via_id", "approved"):
        offers.setdefault(via_id, []).append(approved)
    users: dict[int, list[str]] = {}
    for exit_id, peer_id in Node.objects.filter(use_exit__in=nodes).order_by("peer_id").values_list(
            "use_exit_id", "peer_id"):
        users.setdefault(exit_id, []).append(peer_id)
    return [{"peer_id": n.peer_id, "name": n.name, "network": n.network.name,
             "state": exit_offer(offers.get(n.pk, [])), "used_by": users.get(n.pk, [])} for n in nodes]


def _exit_out(node: Node) -> Json:
    return _exits_out([node])[0]


@router.get("/exit-nodes", response={200: list[ExitNodeOut], **_READ_ERRORS})
def list_exit_nodes(request: HttpRequest, network: str | None = None) -> list[Json]:
    """Every node that offers itself as an exit node, approved or waiting for approval."""
    rows: QuerySet[Node] = scoped(request, Node.objects.select_related("network").filter(
        routes__prefix__in=EXIT_PREFIXES).distinct().order_by("network__name", "name", "peer_id"), network)
    return _exits_out(list(rows))


@router.post("/nodes/{peer_id}/exit-node", response={200: ExitNodeOut, **_WRITE_ERRORS})
def offer_exit_node(request: HttpRequest, payload: ExitOfferIn, peer_id: str = PeerIdPath) -> Json:
    """Offer the node as an exit node (its default routes, 0.0.0.0/0 and ::/0), pending unless
    `approved`; what a node does itself with `up --advertise-exit-node`."""
    node = find_node(request, peer_id)
    advertise_exit_node(node, approved=payload.approved, actor=key_actor(request))
    if payload.approved:
        approve_exit_node(node, actor=key_actor(request))  # an offer made pending earlier
    return _exit_out(node)


@router.post("/nodes/{peer_id}/exit-node/approve", response={200: ExitNodeOut, **_WRITE_ERRORS})
def approve_exit(request: HttpRequest, peer_id: str = PeerIdPath) -> Json:
    """Approve the node's offer: from the next push on it is an exit node nodes may choose."""
    node = find_node(request, peer_id)
    if _exit_out(node)["state"] == "approved":
        raise Conflict(f"{node.name} is already an approved exit node")
    approve_exit_node(node, actor=key_actor(request))
    return _exit_out(node)


@router.delete("/nodes/{peer_id}/exit-node", response={204: None, **_WRITE_ERRORS})
def remove_exit(request: HttpRequest, peer_id: str = PeerIdPath) -> Status[None]:
    """Withdraw the node as an exit node; the nodes that used it send their internet traffic the
    usual way again."""
    node = find_node(request, peer_id)
    if _exit_out(node)["state"] == "none":
        raise Conflict(f"{node.name} is no exit node")
    remove_exit_node(node, actor=key_actor(request))
    return Status(204, None)
