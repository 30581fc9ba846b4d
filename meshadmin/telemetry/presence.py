"""Node presence from websocket connections; a sweep marks silent nodes offline (crashed servers)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import Presence

__all__ = ["STALE_AFTER", "acked", "connected", "disconnected", "seen", "sweep_stale"]

STALE_AFTER = timedelta(seconds=30)  # agents report every 2 s; a silent node is offline


def connected(node_pk: int, now: datetime | None = None) -> bool:
    """Count one more socket; returns True when the node just came online."""
    now = now or timezone.now()
    with transaction.atomic():
        p, _ = Presence.objects.select_for_update().get_or_create(node_id=node_pk)
        was = p.online
        Presence.objects.filter(pk=p.pk).update(connections=F("connections") + 1, online=True,
                                                connected_at=now, last_seen=now)
    return not was


def disconnected(node_pk: int, now: datetime | None = None) -> bool:
    """Count one socket fewer; returns True when the node just went offline."""
    now = now or timezone.now()
    with transaction.atomic():
        p = Presence.objects.select_for_update().filter(node_id=node_pk).first()
        if p is None:
            return False
        left = max(p.connections - 1, 0)
        Presence.objects.filter(pk=p.pk).update(connections=left, online=left > 0, disconnected_at=now,
                                                last_seen=now)
    return p.online and left == 0


def seen(node_pk: int, now: datetime | None = None) -> None:
    Presence.objects.filter(node_id=node_pk).update(last_seen=now or timezone.now(), online=True)


def acked(node_pk: int, serial: int) -> None:
    Presence.objects.filter(node_id=node_pk).update(last_serial=serial)


def sweep_stale(now: datetime | None = None) -> list[int]:
    """Mark nodes offline that have been silent for STALE_AFTER; returns their node pks."""
    now = now or timezone.now()
    stale = list(Presence.objects.filter(online=True, last_seen__lt=now - STALE_AFTER)
                 .values_list("node_id", flat=True))
    if stale:
        Presence.objects.filter(node_id__in=stale).update(online=False, connections=0)
    return stale
