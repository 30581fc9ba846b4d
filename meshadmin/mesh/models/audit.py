from django.db import models

from ..choices import AuditAction
from .networks import Network

__all__ = ["AuditEvent"]


class AuditEvent(models.Model):
    """Append-only record of every write and every refused attempt. Never holds a secret."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=100, help_text="user:<name>, node:<peer id>, anonymous or system")
    action = models.CharField(max_length=32, choices=AuditAction.choices, db_index=True)
    network = models.ForeignKey(Network, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"
