from django.db import models

__all__ = ["ApiKey"]


class ApiKey(models.Model):
    """An operator API key for the REST API (`Authorization: Bearer <key>`); services/apikeys.py.

    The key is `<prefix>_<secret>`: the prefix (`smk_` and 10 random hex characters, no part of the
    secret) names the key in the dashboard, the audit log and the commands; only an HMAC of the whole
    key is stored. Read-only keys may call the API's GET operations only. A key is revoked, never
    deleted, so the audit log's `apikey:<prefix>` always names a row. `last_used_at` is updated at
    most once a minute (LAST_USE_RESOLUTION in the service). A key with `allowed_from` works only
from a client address inside one of those prefixes; a key with a `network` sees and changes that
network only (meshadmin/api/scope.py)."""

    name = models.CharField(max_length=63)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=100, blank=True, help_text="user:<name> or cli")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    network = models.ForeignKey("Network", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="api_keys",
                                help_text="the one network the key may see; empty: every network")
    allowed_from = models.JSONField(default=list, blank=True,
                                    help_text="client prefixes that may use the key; empty: anywhere")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"

    @property
    def scope(self) -> str:
        return "read-only" if self.read_only else "read-write"

    def state(self, now) -> str:
        """"active", "revoked" or "expired"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"
