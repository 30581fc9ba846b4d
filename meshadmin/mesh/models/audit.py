from django.db import models

from ..choices import AuditAction
from .networks import Network

__all__ = ["AuditEvent"]


class AuditEvent(models.Model):
    """Append-only record of every write and every refused attempt. Never holds a secret.

    Repeated refusals are folded (meshadmin.mesh.services.audit.record_refusal): the refusals of
    one kind from one source within a window are one event whose `count` grows and whose
    `last_at` moves; `fold_key` names the kind. Events older than the retention are deleted."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=100, help_text="user:<name>, node:<peer id>, anonymous or system")
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    count = models.PositiveIntegerField(default=1, help_text="how many attempts this event stands for")
    last_at = models.DateTimeField(null=True, blank=True, help_text="the latest attempt folded into it")
    fold_key = models.CharField(max_length=200, blank=True, help_text="what repeated refusals fold on")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["fold_key", "created_at"], name="audit_fold_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"
