"""Folding repeated refusals into one audit event, and the audit log's retention.

A refused attempt (failed authentication, a connection over its limit, an endpoint change over
its limit) is worth one row, not one row per attempt: `record_refusal` adds to the count of the
event of the same kind (action, channel, reason, actor) from the same source address when that
event was created less than FOLD_WINDOW_S ago, and writes a new one otherwise. The actor is a
known node (`node:<peer id>`) or "anonymous": a peer id that names no node is chosen by the
caller and is not part of the kind, so an attacker repeating one mistake writes at most one row
per source, kind and enrolled node every ten minutes. The first attempt's details (the peer id it
named, for instance) stay on the row.

Retention: events older than settings.SHADOWMESH_AUDIT_RETENTION_DAYS (90; 0 keeps everything)
are deleted by the Celery beat task `meshadmin.mesh.tasks.prune_audit_events` (hourly) and, so
that it also happens where no beat runs (the embedded default has none), by `prune_if_due` after
any audit write, at most once per PRUNE_INTERVAL_S per process and PRUNE_BATCH rows at a time.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from meshadmin.metrics import events

from ..choices import AuditAction
from ..models import AuditEvent, Network
from .throttle import AtMostEvery

__all__ = ["FOLD_WINDOW_S", "prune_audit_events", "prune_if_due", "record_refusal", "reset_prune_clock"]

log = logging.getLogger(__name__)

FOLD_WINDOW_S = 600
PRUNE_INTERVAL_S = 3600
PRUNE_BATCH = 10_000


def fold_window() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "SHADOWMESH_AUDIT_FOLD_S", FOLD_WINDOW_S)))


def record_refusal(
    action: AuditAction,
    *,
    reason: str,
    actor: str = "anonymous",
    source_ip: str | None = None,
    channel: str = "",
    network: Network | None = None,
    object_type: str = "",
    object_id: str = "",
    **details,
) -> AuditEvent:
    """Audit a refused attempt, folded with the same refusals from the same source (see above).
    Failed authentications and refused enrollments are counted for /metrics too, each attempt."""
    if action == AuditAction.AUTH_FAILED:
        events.auth_failed(channel or "http", reason)
    elif action == AuditAction.NODE_ENROLL_REJECTED:
        events.enrollment_refused(reason)
    now = timezone.now()
    key = "|".join((action, channel, reason, source_ip or "-", actor))[:200]
    recent = (AuditEvent.objects.filter(fold_key=key, created_at__gte=now - fold_window())
              .order_by("-created_at").values_list("pk", flat=True).first())
    if recent is not None and AuditEvent.objects.filter(pk=recent).update(count=F("count") + 1, last_at=now):
        event = AuditEvent.objects.get(pk=recent)
    else:
        extra = {"channel": channel} if channel else {}
        event = AuditEvent.objects.create(
            action=action, actor=actor[:100], network=network, object_type=object_type,
            object_id=object_id[:64], source_ip=source_ip, details={"reason": reason, **extra, **details},
            fold_key=key, last_at=now,
        )
    prune_if_due()
    return event


def prune_audit_events(now: datetime | None = None, *, limit: int | None = None) -> int:
    """Delete events older than the retention (all of them, or at most `limit`); returns how many."""
    days = int(getattr(settings, "SHADOWMESH_AUDIT_RETENTION_DAYS", 90))
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while limit is None or deleted < limit:
        batch = PRUNE_BATCH if limit is None else min(PRUNE_BATCH, limit - deleted)
        ids = list(AuditEvent.objects.filter(created_at__lt=cutoff).order_by("created_at")
                   .values_list("pk", flat=True)[:batch])
        if not ids:
            break
        deleted += AuditEvent.objects.filter(pk__in=ids).delete()[0]
    if deleted:
        log.info("audit log: %d events older than %d days deleted", deleted, days,
                 extra={"event": "audit.pruned"})
    return deleted


_prune_clock = AtMostEvery(PRUNE_INTERVAL_S)  # when this process last pruned
monotonic = time.monotonic  # (tests move it on)


def prune_if_due() -> None:
    """After the current transaction commits: one bounded prune, if this process has not pruned
    for PRUNE_INTERVAL_S. A failure is logged and never reaches the write that triggered it."""
    if not _prune_clock.due(monotonic()):
        return

    def prune() -> None:
        try:
            prune_audit_events(limit=PRUNE_BATCH)
        except Exception:
            log.exception("audit log: pruning old events failed")

    transaction.on_commit(prune)


def reset_prune_clock() -> None:
    """Forget when this process last pruned (tests)."""
    _prune_clock.reset()
