"""Celery tasks of the mesh app (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from .services.peers import purge_expired_records

__all__ = ["purge_expired_peer_records"]


@shared_task(name="meshadmin.mesh.tasks.purge_expired_peer_records")
def purge_expired_peer_records() -> int:
    """Clear discovery records whose TTL has passed; returns how many."""
    return purge_expired_records()
