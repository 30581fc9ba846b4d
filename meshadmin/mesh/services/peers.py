"""Discovery records: a node registers its own endpoint; peers of its network look it up.

A record lives PEER_RECORD_TTL (24 h) after its last registration. Reads treat an older record
as absent (404); `purge_expired_records` (Celery beat) clears them from the rows.
A refresh that changes nothing only moves last_seen/expiry: no serial bump, no audit row, no
announcement, so the 5-minute refreshes of every node do not churn the netmap.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..constants import PEER_RECORD_TTL
from ..models import Node
from .common import bump_serial, node_actor, record_audit
from .errors import Forbidden, NotFound
from .validation import clean_ip, clean_port

__all__ = ["lookup_peer", "purge_expired_records", "register_peer"]

_RECORD_FIELDS = ("endpoint_ip", "control_port", "udp_port", "observed_ip", "observed_port")
_RECORD_DEFAULTS = {**dict.fromkeys(_RECORD_FIELDS), "advertised_public": False, "record_expires_at": None}


def register_peer(
    node: Node,
    *,
    ip: str,
    port: int,
    udp_port: int,
    is_public: bool,
    observed_ip: str | None,
    observed_port: int | None = None,
    agent_version: str | None = None,
) -> Node:
    """Store `node`'s own record. The caller has authenticated the node; it cannot name another.
    `agent_version`, when given, is kept as reported (it changes nothing peers see)."""
    ip = clean_ip(ip, "ip")
    port = clean_port(port, "port")
    udp_port = clean_port(udp_port, "udp_port")
    if is_public and not node.is_public:
        raise Forbidden("is_public: this node was not enrolled as a public node")
    now = timezone.now()
    new = {
        "endpoint_ip": ip,
        "control_port": port,
        "udp_port": udp_port,
        "advertised_public": bool(is_public),
        "observed_ip": observed_ip,
        "observed_port": observed_port,
    }
    with transaction.atomic():
        current = Node.objects.select_for_update().get(pk=node.pk)
        if current.status != NodeStatus.ACTIVE:
            raise Forbidden("this node has been revoked")
        was_live = current.record_is_live(now)
        changed = not was_live or any(getattr(current, f) != v for f, v in new.items())
        extra = {} if agent_version is None else {"agent_version": agent_version[:64]}
        Node.objects.filter(pk=node.pk).update(
            last_seen=now, record_expires_at=now + PEER_RECORD_TTL, **new, **extra
        )
        if changed:
            locked = bump_serial(node.network_id)
            record_audit(
                AuditAction.PEER_REGISTERED,
                actor=node_actor(current),
                network=locked,
                obj=current,
                source_ip=observed_ip,
                ip=ip,
                port=port,
                udp_port=udp_port,
            )
            announce(Change(locked.pk, "peer.registered", ALL_NODES, locked.serial))
    node.refresh_from_db()
    return node


def lookup_peer(requester: Node, peer_id: str) -> Node:
    """The live record of `peer_id` in the requester's network, or NotFound."""
    node = Node.objects.filter(peer_id=peer_id, network_id=requester.network_id).first()
    if node is None or not node.record_is_live(timezone.now()):
        raise NotFound("no live record for this peer")
    return node


def purge_expired_records(now=None) -> int:
    """Clear every expired discovery record; returns how many were cleared."""
    now = now or timezone.now()
    cleared = 0
    network_ids = (
        Node.objects.filter(record_expires_at__lte=now).values_list("network_id", flat=True).distinct()
    )
    for network_id in list(network_ids):
        with transaction.atomic():
            locked = bump_serial(network_id)
            count = Node.objects.filter(network_id=network_id, record_expires_at__lte=now).update(
                **_RECORD_DEFAULTS
            )
            record_audit(AuditAction.PEER_RECORDS_PURGED, actor="system", network=locked, count=count)
            announce(Change(locked.pk, "peer.purged", ALL_NODES, locked.serial))
        cleared += count
    return cleared
