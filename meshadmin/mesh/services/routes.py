"""Routes: a subnet reachable via a node; approve before it takes effect.

`set_routes` makes a node's subnet routes exactly a given list (the API's PUT): every prefix is
checked before anything is written, then the routes to add, approve and remove go through
create_route, approve_route and delete_route in one transaction (so each is audited and announced
as if made one by one, and either all of them happen or none)."""

from __future__ import annotations

import ipaddress

from django.db import IntegrityError, transaction

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..models import Network, Node, Route
from .common import bump_serial, record_audit
from .errors import Conflict, InvalidInput

__all__ = ["approve_route", "create_route", "delete_route", "set_routes"]


def _clean_prefix(prefix: str) -> str:
    try:
        net = ipaddress.ip_network(prefix.strip(), strict=True)
    except (ValueError, AttributeError) as exc:
        raise InvalidInput("prefix: not a network prefix (like 192.168.1.0/24)") from exc
    if net.prefixlen == 0:  # a default route makes an exit node, which has its own controls
        raise InvalidInput("prefix: a default route makes the node an exit node; advertise it as one "
                           "(services/exits.py, the node's page) instead")
    return str(net)


def create_route(via: Node, prefix: str, *, approved: bool = False, actor: str = "system") -> Route:
    prefix = _clean_prefix(prefix)
    if via.status != NodeStatus.ACTIVE:
        raise Conflict("routes can only go via an active node")
    try:
        with transaction.atomic():
            locked = bump_serial(via.network_id)
            route = Route.objects.create(network=locked, prefix=prefix, via=via, approved=approved)
            record_audit(
                AuditAction.ROUTE_CREATED,
                actor=actor,
                network=locked,
                obj=route,
                prefix=prefix,
                via=via.peer_id,
                approved=approved,
            )
            announce(Change(locked.pk, "route.created", ALL_NODES, locked.serial))
    except IntegrityError as exc:
        raise Conflict(f"{prefix} via {via.name} already exists") from exc
    return route


def approve_route(route: Route, *, actor: str = "system") -> Route:
    with transaction.atomic():
        locked = bump_serial(route.network_id)
        Route.objects.filter(pk=route.pk).update(approved=True)
        route.refresh_from_db()
        record_audit(AuditAction.ROUTE_APPROVED, actor=actor, network=locked, obj=route, prefix=route.prefix)
        announce(Change(locked.pk, "route.approved", ALL_NODES, locked.serial))
    return route


def delete_route(route: Route, *, actor: str = "system") -> None:
    with transaction.atomic():
        locked = bump_serial(route.network_id)
        object_id, prefix = str(route.pk), route.prefix
        Route.objects.filter(pk=route.pk).delete()
        record_audit(
            AuditAction.ROUTE_DELETED,
            actor=actor,
            network=locked,
            object_type="route",
            object_id=object_id,
            prefix=prefix,
        )
        announce(Change(locked.pk, "route.deleted", ALL_NODES, locked.serial))


def _is_default(prefix: str) -> bool:
    return ipaddress.ip_network(prefix).prefixlen == 0


def set_routes(
    via: Node, prefixes: list[str], *, approved: bool = False, actor: str = "system",
) -> list[Route]:
    """Make `prefixes` the subnet routes through `via`: add the missing ones (approved if
    `approved`), approve the listed pending ones when `approved`, delete the rest. Default routes
    (0.0.0.0/0, ::/0: an exit node's) are neither listed nor removed here. Returns the node's routes."""
    wanted: list[str] = []
    for i, raw in enumerate(prefixes):
        try:
            prefix = _clean_prefix(raw if isinstance(raw, str) else "")
        except InvalidInput as exc:
            raise InvalidInput(f"prefixes[{i}]: {exc.detail.removeprefix('prefix: ')}") from None
        if _is_default(prefix):
            raise InvalidInput(f"prefixes[{i}]: a default route makes an exit node; it is not a subnet route")
        if prefix not in wanted:
            wanted.append(prefix)
    if wanted and via.status != NodeStatus.ACTIVE:
        raise Conflict("routes can only go via an active node")
    with transaction.atomic():
        Network.objects.select_for_update().get(pk=via.network_id)  # one writer of the network at a time
        current = {r.prefix: r for r in Route.objects.filter(via=via) if not _is_default(r.prefix)}
        for prefix in wanted:
            route = current.get(prefix)
            if route is None:
                create_route(via, prefix, approved=approved, actor=actor)
            elif approved and not route.approved:
                approve_route(route, actor=actor)
        for prefix, route in current.items():
            if prefix not in wanted:
                delete_route(route, actor=actor)
    return list(Route.objects.filter(via=via).order_by("prefix"))
