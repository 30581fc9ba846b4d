"""Node presence from websocket connections; a sweep marks silent nodes offline (crashed servers)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .models import Presence

__all__ = ["STALE_AFTER", "acked", "acked_many", "connected", "disconnected", "seen", "sweep_stale"]

# a node none of whose sockets was heard of for this long is offline (its server process died
# without counting it off): three of the longest interval between counter reports a server asks
# for (realtime/stats_rate.py CEILING_S)
STALE_AFTER = timedelta(seconds=90)


def connected(node_pk: int, now: datetime | None = None) -> bool:
    """Count one more socket; returns True when the node just came online.

    One conditional UPDATE in the common cases (each is atomic on its own), since every agent
    connection and disconnection writes here."""
    now = now or timezone.now()
    fields = {"online": True, "connected_at": now, "last_seen": now}
    if Presence.objects.filter(node_id=node_pk, online=False).update(connections=1, **fields):
        return True
    if Presence.objects.filter(node_id=node_pk).update(connections=F("connections") + 1, **fields):
        return False
    with transaction.atomic():
        _, created = Presence.objects.get_or_create(node_id=node_pk, defaults={"connections": 1, **fields})
    if not created:  # a racing first connection created it
        Presence.objects.filter(node_id=node_pk).update(connections=F("connections") + 1, **fields)
    return created


def disconnected(node_pk: int, now: datetime | None = None) -> bool:
    """Count one socket fewer; returns True when the node just went offline."""
    now = now or timezone.now()
    fields = {"disconnected_at": now, "last_seen": now}
    if Presence.objects.filter(node_id=node_pk, online=True, connections__lte=1).update(
            connections=0, online=False, **fields):
        return True
    Presence.objects.filter(node_id=node_pk, connections__gt=1).update(
        connections=F("connections") - 1, **fields)
    return False


def seen(node_pk: int, now: datetime | None = None) -> None:
    Presence.objects.filter(node_id=node_pk).update(last_seen=now or timezone.now(), online=True)


def acked(node_pk: int, serial: int) -> None:
    Presence.objects.filter(node_id=node_pk).update(last_serial=serial)


def acked_many(acks: dict[int, int]) -> None:
    """node pk -> acknowledged serial; one UPDATE per distinct serial (after a push: one).

    On PostgreSQL the nodes go as one array parameter: a server process stores the acks of
    thousands of sockets a second during a change, and an IN list has the ORM prepare and bind each
    of its values on the process's one database thread (5-6 % of a server's CPU during changes at
    10,000 agents), holding the interpreter the event loop needs."""
    by_serial: dict[int, list[int]] = {}
    for pk, serial in acks.items():
        by_serial.setdefault(serial, []).append(pk)
    with transaction.atomic():
        for serial, pks in by_serial.items():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"UPDATE {Presence._meta.db_table} SET last_serial = %s "  # noqa: S608 (table name)
                                   "WHERE node_id = ANY(%s)", [serial, pks])
            else:
                Presence.objects.filter(node_id__in=pks).update(last_serial=serial)


def sweep_stale(now: datetime | None = None) -> list[int]:
    """Mark nodes offline that have been silent for STALE_AFTER; returns their node pks."""
    now = now or timezone.now()
    stale = list(Presence.objects.filter(online=True, last_seen__lt=now - STALE_AFTER)
                 .values_list("node_id", flat=True))
    if stale:
        Presence.objects.filter(node_id__in=stale).update(online=False, connections=0)
    return stale
