from django.db import models

from .networks import Network
from .nodes import Node

__all__ = ["Route"]


class Route(models.Model):
    """A subnet reachable through a node; it takes effect once approved."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="routes")
    prefix = models.CharField(max_length=43)
    via = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="routes")
    approved = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network", "prefix"]
        constraints = [
            models.UniqueConstraint(fields=["network", "prefix", "via"], name="route_unique_per_via"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} via {self.via.name}"
