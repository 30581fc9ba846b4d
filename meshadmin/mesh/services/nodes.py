"""Node lifecycle: rename, revoke (key blocked, address freed), delete (address freed)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..models import Node, SessionToken
from .common import bump_serial, record_audit
from .errors import Conflict
from .validation import clean_label

__all__ = ["delete_node", "name_taken", "rename_node", "revoke_node"]


def name_taken(network_id: int, name: str, *, other_than: int | None = None) -> bool:
    """Whether an active node of the network has this name (compared as DNS compares it: case
    does not matter), other than the node `other_than`."""
    rows = Node.objects.filter(network_id=network_id, status=NodeStatus.ACTIVE, name__iexact=name)
    return rows.exclude(pk=other_than).exists() if other_than is not None else rows.exists()


def rename_node(node: Node, name: str, *, actor: str = "system") -> Node:
    """Changes the name in the registry, and so the node's DNS name (`<name>.<suffix>`, when the
    name is a DNS label: nodeagent/protocol/dnsname.py) in every peer's next netmap; the node's
    certificate keeps the old name until re-issued. No other active node of the network may have
    the name, compared as DNS compares names, without regard to case (Conflict)."""
    name = clean_label(name, "name")
    with transaction.atomic():
        locked = bump_serial(node.network_id)
        if name_taken(node.network_id, name, other_than=node.pk):
            raise Conflict(f"name: another node of this network is called {name!r}")
        old = Node.objects.get(pk=node.pk).name
        Node.objects.filter(pk=node.pk).update(name=name)
        node.refresh_from_db()
        record_audit(AuditAction.NODE_RENAMED, actor=actor, network=locked, obj=node, old=old, new=name)
        announce(Change(locked.pk, "node.renamed", ALL_NODES, locked.serial))
    return node


def revoke_node(node: Node, *, actor: str = "system") -> Node:
    """Revoke: the row stays (its public key can never enroll again), its overlay IP is freed,
    its discovery record and sessions are dropped, and every peer is told."""
    with transaction.atomic():
        locked = bump_serial(node.network_id)
        current = Node.objects.select_for_update().get(pk=node.pk)
        if current.status == NodeStatus.REVOKED:
            raise Conflict("node is already revoked")
        freed = current.overlay_ip
        Node.objects.filter(pk=node.pk).update(
            status=NodeStatus.REVOKED,
            revoked_at=timezone.now(),
            overlay_ip=None,
            endpoint_ip=None,
            control_port=None,
            udp_port=None,
            advertised_public=False,
            observed_ip=None,
            observed_port=None,
            candidates=[],
            record_expires_at=None,
        )
        SessionToken.objects.filter(node_id=node.pk).delete()
        node.refresh_from_db()
        record_audit(
            AuditAction.NODE_REVOKED,
            actor=actor,
            network=locked,
            obj=node,
            peer_id=node.peer_id,
            freed_overlay_ip=freed,
        )
        announce(Change(locked.pk, "node.revoked", ALL_NODES, locked.serial))
    return node


REVOKED_STAYS = (
    "a revoked node cannot be deleted: its record keeps it on every peer's revocation list "
    "(its certificate is still otherwise valid) and stops its key from enrolling again"
)


def delete_node(node: Node, *, actor: str = "system", reason: str | None = None) -> None:
    """Delete an active node's row: its overlay IP is free for the next enrollment and its key may
    enroll again. A revoked node is refused (Conflict): revocation is permanent, and the row is what
    puts the node's peer id on the netmap's revocation list and refuses its key at enrollment."""
    with transaction.atomic():
        locked = bump_serial(node.network_id)
        if Node.objects.filter(pk=node.pk, status=NodeStatus.REVOKED).exists():
            raise Conflict(REVOKED_STAYS)
        details = {"peer_id": node.peer_id, "name": node.name, "overlay_ip": node.overlay_ip}
        if reason is not None:
            details["reason"] = reason
        object_id = str(node.pk)
        Node.objects.filter(pk=node.pk).delete()
        record_audit(
            AuditAction.NODE_DELETED,
            actor=actor,
            network=locked,
            object_type="node",
            object_id=object_id,
            **details,
        )
        announce(Change(locked.pk, "node.deleted", ALL_NODES, locked.serial))
