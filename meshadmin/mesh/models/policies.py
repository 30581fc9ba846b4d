"""Access policy: tags on nodes, groups, and the rules that allow traffic between them.

A network's policy is its `Network.policy_default` and its `AccessRule`s (meshadmin/netmap/
policy.py computes what each node may reach; docs/policy.md says it in words). Rules and groups
name nodes with selectors (services/policies.py checks them):

    "*"             every node of the network
    "tag:NAME"      the nodes that carry tag NAME
    "group:NAME"    the members of group NAME (rules only: a group does not hold groups)
    "node:PEER_ID"  one node

Selectors are stored as text in JSON lists; the services keep them pointing at tags and groups
that exist (a tag or group in use cannot be deleted). A node selector whose node is gone matches
nothing.
"""

from django.db import models

from ..choices import RuleProtocol
from .networks import Network
from .nodes import Node
from .tokens import EnrollmentToken

__all__ = ["AccessRule", "Group", "Tag"]


class Tag(models.Model):
    """A label on nodes (set in the dashboard, or pre-assigned by the token a node enrolls with)."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=63)
    description = models.CharField(max_length=200, blank=True)
    nodes = models.ManyToManyField(Node, blank=True, related_name="tags")
    tokens = models.ManyToManyField(EnrollmentToken, blank=True, related_name="tags",
                                    help_text="nodes enrolled with these tokens get the tag")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network", "name"]
        constraints = [models.UniqueConstraint(fields=["network", "name"], name="tag_unique_per_network")]

    def __str__(self) -> str:
        return f"tag:{self.name}"


class Group(models.Model):
    """A named set of nodes: `members` holds selectors ("tag:NAME", "node:PEER_ID", "*")."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="groups")
    name = models.CharField(max_length=63)
    description = models.CharField(max_length=200, blank=True)
    members = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network", "name"]
        constraints = [models.UniqueConstraint(fields=["network", "name"], name="group_unique_per_network")]

    def __str__(self) -> str:
        return f"group:{self.name}"


class AccessRule(models.Model):
    """Allows traffic from the `sources` to the `destinations` with `protocol` and, for tcp and
    udp, a destination port in `ports` ([[lo, hi], ...]; empty: every port). Rules only allow;
    `position` orders them for people (1, 2, ...: the services keep it dense)."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="access_rules")
    position = models.PositiveIntegerField()
    sources = models.JSONField(default=list)
    destinations = models.JSONField(default=list)
    protocol = models.CharField(max_length=8, choices=RuleProtocol.choices, default=RuleProtocol.ANY)
    ports = models.JSONField(default=list, blank=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["network", "position", "id"]

    def __str__(self) -> str:
        return f"rule {self.position}: {', '.join(self.sources)} -> {', '.join(self.destinations)}"
