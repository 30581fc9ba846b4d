"""Routes: a subnet reachable via a node; approve before it takes effect."""

from __future__ import annotations

import ipaddress

from django.db import IntegrityError, transaction

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..models import Node, Route
from .common import bump_serial, record_audit
from .errors import Conflict, InvalidInput

__all__ = ["approve_route", "create_route", "delete_route"]


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
