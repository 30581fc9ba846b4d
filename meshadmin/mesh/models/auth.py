from django.db import models

from .nodes import Node

__all__ = ["AuthChallenge", "SessionToken"]


class AuthChallenge(models.Model):
    """A 32-byte challenge for one node, stored as a hash; spent by the first verify attempt; 60 s."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    challenge_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)


class SessionToken(models.Model):
    """A bearer session for one node, stored as a hash; expires (24 h by default)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="sessions")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self) -> str:
        return f"session {self.prefix}… for {self.node.name}"
