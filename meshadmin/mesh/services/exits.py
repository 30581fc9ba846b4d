"""Exit nodes: a node that forwards other nodes' internet traffic (docs/operations.md#exit-nodes).

A node offers itself as an exit node with two default routes through it, 0.0.0.0/0 and ::/0
(`Route` rows, as a subnet route): it advertises them itself (`up --advertise-exit-node`, the
websocket's `advertise`) or an operator does in the dashboard. Like every route they take effect
once approved: then every node's netmap lists them (a node uses an exit node only when it selects
it: `up --exit-node NAME`, or `use_exit`, chosen here by an operator) and the exit node's own map
says `is_exit`, which turns its forwarding and masquerading on. Removing them turns both off.

Each write is one transaction: the rows, the serial bump, one audit event, the announcement.
A request that changes nothing (advertising twice) writes nothing and announces nothing.
"""

from __future__ import annotations

from django.db import transaction

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..models import Node, Route
from .common import bump_serial, record_audit
from .errors import Conflict, InvalidInput

__all__ = [
    "EXIT_PREFIXES", "advertise_exit_node", "approve_exit_node", "exit_state", "remove_exit_node",
    "select_exit_node",
]

EXIT_PREFIXES = ("0.0.0.0/0", "::/0")


def exit_state(node: Node) -> str:
    """"approved" (every default route through it approved), "pending" (advertised, waiting for an
    operator) or "" (not an exit node)."""
    rows = list(Route.objects.filter(via=node, prefix__in=EXIT_PREFIXES).values_list("approved", flat=True))
    if not rows:
        return ""
    return "approved" if all(rows) else "pending"


def _active(node: Node) -> None:
    if node.status != NodeStatus.ACTIVE:
        raise Conflict("an exit node must be an active node")


def advertise_exit_node(node: Node, *, approved: bool = False, actor: str = "system") -> Node:
    """Add the default routes through `node` that are missing (pending unless `approved`)."""
    _active(node)
    with transaction.atomic():
        Node.objects.select_for_update().get(pk=node.pk)  # one advertisement of a node at a time
        have = set(Route.objects.filter(via=node, prefix__in=EXIT_PREFIXES).values_list("prefix", flat=True))
        missing = [p for p in EXIT_PREFIXES if p not in have]
        if not missing:
            return node
        locked = bump_serial(node.network_id)
        Route.objects.bulk_create([Route(network=locked, prefix=p, via=node, approved=approved)
                                   for p in missing])
        record_audit(AuditAction.EXIT_ADVERTISED, actor=actor, network=locked, obj=node,
                     peer_id=node.peer_id, prefixes=missing, approved=approved)
        announce(Change(locked.pk, "exit.advertised", ALL_NODES, locked.serial))
    return node


def approve_exit_node(node: Node, *, actor: str = "system") -> Node:
    """Approve the default routes `node` advertised: from the next push it is an exit node."""
    _active(node)
    with transaction.atomic():
        pending = Route.objects.filter(via=node, prefix__in=EXIT_PREFIXES, approved=False)
        prefixes = sorted(pending.values_list("prefix", flat=True))
        if not prefixes:
            if not Route.objects.filter(via=node, prefix__in=EXIT_PREFIXES).exists():
                raise Conflict(f"{node.name} does not offer itself as an exit node")
            return node
        locked = bump_serial(node.network_id)
        pending.update(approved=True)
        record_audit(AuditAction.EXIT_APPROVED, actor=actor, network=locked, obj=node, peer_id=node.peer_id,
                     prefixes=prefixes)
        announce(Change(locked.pk, "exit.approved", ALL_NODES, locked.serial))
    return node


def remove_exit_node(node: Node, *, actor: str = "system") -> Node:
    """Remove the default routes through `node` (approved or not): it stops being an exit node,
    and the nodes that used it send their internet traffic the usual way again."""
    with transaction.atomic():
        rows = Route.objects.filter(via=node, prefix__in=EXIT_PREFIXES)
        prefixes = sorted(rows.values_list("prefix", flat=True))
        if not prefixes:
            return node
        locked = bump_serial(node.network_id)
        rows.delete()
        record_audit(AuditAction.EXIT_REMOVED, actor=actor, network=locked, obj=node, peer_id=node.peer_id,
                     prefixes=prefixes)
        announce(Change(locked.pk, "exit.removed", ALL_NODES, locked.serial))
    return node


def select_exit_node(node: Node, exit_node: Node | None, *, actor: str = "system") -> Node:
    """`node` sends its internet traffic through `exit_node` (None: through nobody). The choice
    reaches the node in its netmap (`use_exit`); it takes effect while `exit_node` is an approved
    exit node that the node may use, and a node's own `up --exit-node` overrides it."""
    if exit_node is not None:
        if exit_node.pk == node.pk:
            raise InvalidInput("exit_node: a node cannot be its own exit node")
        if exit_node.network_id != node.network_id:
            raise InvalidInput("exit_node: not a node of this network")
        _active(exit_node)
        if not Route.objects.filter(via=exit_node, prefix__in=EXIT_PREFIXES).exists():
            raise Conflict(f"exit_node: {exit_node.name} does not offer itself as an exit node")
    with transaction.atomic():
        current = Node.objects.select_for_update().get(pk=node.pk)
        new_id = None if exit_node is None else exit_node.pk
        if current.use_exit_id == new_id:
            return node
        locked = bump_serial(node.network_id)
        Node.objects.filter(pk=node.pk).update(use_exit=exit_node)
        node.refresh_from_db()
        record_audit(AuditAction.EXIT_SELECTED, actor=actor, network=locked, obj=node, peer_id=node.peer_id,
                     exit_node=None if exit_node is None else exit_node.peer_id)
        announce(Change(locked.pk, "exit.selected", ALL_NODES, locked.serial))
    return node
