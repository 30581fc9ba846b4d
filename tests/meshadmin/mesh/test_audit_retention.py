"""Audit events are kept SHADOWMESH_AUDIT_RETENTION_DAYS (90) and then deleted: by the Celery
beat task where beat runs, and by the server itself after an audit write where it does not (the
embedded default has no beat: docs/operations.md#periodic-jobs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from meshadmin.env import REGISTRY
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent
from meshadmin.mesh.services import audit
from meshadmin.mesh.services.common import record_audit
from meshadmin.mesh.tasks import prune_audit_events


def _event(age_days: float, reason: str = "old") -> AuditEvent:
    event = AuditEvent.objects.create(action=AuditAction.AUTH_FAILED, actor="anonymous",
                                      details={"reason": reason})
    AuditEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=age_days))
    return event


def _left() -> list[str]:
    return sorted(e.details["reason"] for e in AuditEvent.objects.all())


@pytest.mark.django_db
def test_the_prune_task_deletes_events_older_than_the_retention(settings):
    settings.SHADOWMESH_AUDIT_RETENTION_DAYS = 90
    _event(91, "91 days")
    _event(400, "400 days")
    _event(89, "89 days")
    _event(0, "today")
    assert prune_audit_events.apply().get() == 2  # the Celery task, run here (no worker in the tests)
    assert _left() == ["89 days", "today"]
    settings.SHADOWMESH_AUDIT_RETENTION_DAYS = 30
    assert prune_audit_events() == 1
    assert _left() == ["today"]


@pytest.mark.django_db
def test_a_retention_of_0_keeps_everything(settings):
    settings.SHADOWMESH_AUDIT_RETENTION_DAYS = 0
    _event(5000)
    assert prune_audit_events() == 0
    assert _left() == ["old"]


@pytest.mark.django_db
def test_a_bounded_prune_deletes_the_oldest_first(settings, monkeypatch):
    settings.SHADOWMESH_AUDIT_RETENTION_DAYS = 90
    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)
    for age in (100, 300, 200, 150, 120):
        _event(age, f"{age}")
    assert audit.prune_audit_events(limit=3) == 3
    assert _left() == ["100", "120"]
    assert audit.prune_audit_events() == 2  # unbounded: in batches until none is left


def test_the_retention_is_a_documented_setting_with_a_90_day_default():
    assert "SHADOWMESH_AUDIT_RETENTION_DAYS" in REGISTRY
    assert django_settings.SHADOWMESH_AUDIT_RETENTION_DAYS == 90
    schedule = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert "meshadmin.mesh.tasks.prune_audit_events" in schedule


@pytest.mark.django_db(transaction=True)
def test_without_beat_an_audit_write_prunes_old_events_at_most_hourly(settings, monkeypatch):
    """The embedded default runs no Celery beat: the prune still happens, after a write commits."""
    settings.SHADOWMESH_AUDIT_RETENTION_DAYS = 90
    audit.reset_prune_clock()
    _event(120, "stale")
    record_audit(AuditAction.NETWORK_CREATED, actor="system", reason="a write")
    assert _left() == ["a write"]
    # within the hour this process does not prune again...
    _event(120, "stale again")
    audit.record_refusal(AuditAction.AUTH_FAILED, reason="refused", source_ip="198.18.0.9")
    assert _left() == ["a write", "refused", "stale again"]
    # ...and once the hour is over it does
    later = audit.monotonic() + audit.PRUNE_INTERVAL_S + 1
    monkeypatch.setattr(audit, "monotonic", lambda: later)
    audit.record_refusal(AuditAction.AUTH_FAILED, reason="refused", source_ip="198.18.0.9")
    assert _left() == ["a write", "refused"]


@pytest.mark.django_db(transaction=True)
def test_a_failing_prune_never_fails_the_write_that_triggered_it(settings, monkeypatch, caplog):
    audit.reset_prune_clock()

    def broken(**kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(audit, "prune_audit_events", broken)
    record_audit(AuditAction.NETWORK_CREATED, actor="system", reason="kept")
    assert _left() == ["kept"]
    assert "pruning old events failed" in caplog.text
