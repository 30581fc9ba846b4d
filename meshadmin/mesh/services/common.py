"""Helpers shared by the services: the serial bump (which also serialises writers of one
network) and audit events (repeated refusals are folded by services/audit.py)."""

from __future__ import annotations

from django.db.models import F

from ..choices import AuditAction
from ..models import AuditEvent, Network
from .audit import prune_if_due

__all__ = ["apikey_actor", "bump_serial", "node_actor", "record_audit", "user_actor"]


def bump_serial(network_id: int) -> Network:
    """Increment the network's serial and return the locked, fresh row.

    Must run inside transaction.atomic(). The UPDATE takes the network's row lock, so concurrent
    writers to one network queue here until the first commits; under READ COMMITTED (PostgreSQL)
    the next writer then sees the rows the first inserted, which keeps IPAM retries rare.
    """
    Network.objects.filter(pk=network_id).update(serial=F("serial") + 1)
    return Network.objects.get(pk=network_id)


def record_audit(
    action: AuditAction,
    *,
    actor: str,
    network: Network | None = None,
    obj=None,
    object_type: str = "",
    object_id: str = "",
    source_ip: str | None = None,
    **details,
) -> AuditEvent:
    if obj is not None:
        object_type = object_type or obj._meta.model_name
        object_id = object_id or str(obj.pk)
    event = AuditEvent.objects.create(
        action=action,
        actor=actor[:100],
        network=network,
        object_type=object_type,
        object_id=object_id[:64],
        source_ip=source_ip,
        details=details,
    )
    prune_if_due()  # the retention, also where no Celery beat runs (services/audit.py)
    return event


def user_actor(user) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "system"
    return f"user:{user.get_username()}"


def node_actor(node) -> str:
    return f"node:{node.peer_id}"


def apikey_actor(key) -> str:
    """An operator API key (services/apikeys.py), named by its public prefix."""
    return f"apikey:{key.prefix}"
