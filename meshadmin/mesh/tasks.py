"""Celery tasks of the mesh app (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from .services.audit import prune_audit_events as _prune_audit
from .services.auth import purge_expired_credentials as _purge_credentials
from .services.ephemeral import reap_ephemeral_nodes as _reap_ephemeral
from .services.peers import purge_expired_records

__all__ = ["prune_audit_events", "purge_expired_credentials", "purge_expired_peer_records",
           "reap_ephemeral_nodes"]


@shared_task(name="meshadmin.mesh.tasks.purge_expired_peer_records")
def purge_expired_peer_records() -> int:
    """Clear discovery records whose TTL has passed; returns how many."""
    return purge_expired_records()


@shared_task(name="meshadmin.mesh.tasks.purge_expired_credentials")
def purge_expired_credentials() -> int:
    """Delete expired auth challenges and session tokens; returns how many."""
    return _purge_credentials()


@shared_task(name="meshadmin.mesh.tasks.prune_audit_events")
def prune_audit_events() -> int:
    """Delete audit events older than SHADOWMESH_AUDIT_RETENTION_DAYS; returns how many."""
    return _prune_audit()


@shared_task(name="meshadmin.mesh.tasks.reap_ephemeral_nodes")
def reap_ephemeral_nodes() -> int:
    """Delete ephemeral nodes silent for SHADOWMESH_EPHEMERAL_AFTER_S; returns how many."""
    return len(_reap_ephemeral())
