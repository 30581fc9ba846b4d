"""Celery beat jobs: roll raw samples up into 1-minute rows, prune old samples, sweep presence.

Retention: raw samples 1 h, minute aggregates 7 days. The rollup takes every raw sample of a
finished minute not yet rolled up, adds it into that minute's row (creating it if needed) and
marks it, in one transaction, so a rerun never counts a sample twice.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from nodeagent.protocol.counters import TRAFFIC

from . import presence
from .models import Resolution, Sample

__all__ = ["MINUTE_RETENTION", "RAW_RETENTION", "prune", "rollup", "sweep_presence"]

RAW_RETENTION = timedelta(hours=1)
MINUTE_RETENTION = timedelta(days=7)
BATCH = 5000


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


@shared_task(name="meshadmin.telemetry.tasks.rollup", ignore_result=True)
def rollup(now: datetime | None = None) -> int:
    """Aggregate finished minutes; returns how many raw samples were rolled up."""
    now = now or timezone.now()
    done = 0
    while True:
        with transaction.atomic():
            raw = list(Sample.objects.select_for_update(skip_locked=True).filter(
                resolution=Resolution.RAW, rolled_up=False, ts__lt=_minute(now)).order_by("ts")[:BATCH])
            if not raw:
                return done
            buckets: dict[tuple, list[Sample]] = defaultdict(list)
            for s in raw:
                buckets[(s.network_id, s.node_id, s.peer_id, _minute(s.ts))].append(s)
            for (network_id, node_id, peer_id, minute), items in buckets.items():
                row, _ = Sample.objects.select_for_update().get_or_create(
                    node_id=node_id, peer_id=peer_id, resolution=Resolution.MINUTE, ts=minute,
                    defaults={"network_id": network_id, "interval_s": 0.0, "path": items[-1].path,
                              "samples": 0, "rtt_samples": 0})
                rtts = [s.rtt_ms for s in items if s.rtt_ms is not None]
                if rtts:  # mean over the raw samples that measured it, old rows weighted by their count
                    old_n = row.rtt_samples if row.rtt_ms is not None else 0
                    row.rtt_ms = ((row.rtt_ms or 0.0) * old_n + sum(rtts)) / (old_n + len(rtts))
                    row.rtt_samples = old_n + len(rtts)
                row.samples += len(items)
                row.interval_s += sum(s.interval_s for s in items)
                row.path = items[-1].path
                for f in TRAFFIC:
                    setattr(row, f, getattr(row, f) + sum(getattr(s, f) for s in items))
                row.save()
            Sample.objects.filter(pk__in=[s.pk for s in raw]).update(rolled_up=True)
            done += len(raw)


@shared_task(name="meshadmin.telemetry.tasks.prune", ignore_result=True)
def prune(now: datetime | None = None) -> int:
    """Delete raw samples older than 1 h (once rolled up) and minute rows older than 7 days."""
    now = now or timezone.now()
    raw, _ = Sample.objects.filter(resolution=Resolution.RAW, ts__lt=now - RAW_RETENTION,
                                   rolled_up=True).delete()
    minute, _ = Sample.objects.filter(resolution=Resolution.MINUTE, ts__lt=now - MINUTE_RETENTION).delete()
    return raw + minute


@shared_task(name="meshadmin.telemetry.tasks.sweep_presence", ignore_result=True)
def sweep_presence() -> int:
    return len(presence.sweep_stale())
