from django.conf import settings
from django.db import models

from .networks import Network

__all__ = ["EnrollmentToken"]


class EnrollmentToken(models.Model):
    """A one-time or N-use enrollment token. Only its hash is stored (see mesh/secrets.py).

    Consumed with a conditional UPDATE (uses_left > 0, not revoked, not expired) inside the
    enrollment transaction, so two racing enrollments cannot both spend the last use.
    """

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False)
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="tokens")
    max_uses = models.PositiveIntegerField(default=1)
    uses_left = models.PositiveIntegerField(default=1)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    is_public = models.BooleanField(default=False, help_text="nodes enrolled with it may be public/relays")
    ephemeral = models.BooleanField(default=False, help_text="nodes enrolled with it are ephemeral")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.network.name}, {self.uses_left}/{self.max_uses} left)"
