"""Enumerations stored in the database."""

from django.db import models

__all__ = ["AuditAction", "NodeStatus", "PolicyDefault", "RuleProtocol"]


class NodeStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


class AuditAction(models.TextChoices):
    NETWORK_CREATED = "network.created", "Network created"
    NETWORK_DNS_CHANGED = "network.dns_changed", "DNS suffix changed"
    NETWORK_SERIALS_ADVANCED = "network.serials_advanced", "Netmap serial advanced after a restore"
    TOKEN_CREATED = "token.created", "Token created"
    TOKEN_REVOKED = "token.revoked", "Token revoked"
    TOKEN_REJECTED = "token.rejected", "Token rejected"
    NODE_ENROLLED = "node.enrolled", "Node enrolled"
    NODE_ENROLL_REJECTED = "node.enroll_rejected", "Enrollment rejected"
    NODE_RENAMED = "node.renamed", "Node renamed"
    NODE_CERT_RENEWED = "node.cert_renewed", "Certificate renewed"
    NODE_REVOKED = "node.revoked", "Node revoked"
    NODE_DELETED = "node.deleted", "Node deleted"
    AUTH_CHALLENGE_ISSUED = "auth.challenge", "Auth challenge issued"
    AUTH_SUCCEEDED = "auth.succeeded", "Auth succeeded"
    AUTH_FAILED = "auth.failed", "Auth failed"
    AUTH_RATE_LIMITED = "auth.rate_limited", "Connections refused (rate limit)"
    PEER_REGISTERED = "peer.registered", "Peer record registered"
    PEER_RECORDS_PURGED = "peer.purged", "Expired peer records purged"
    PEER_REGISTER_REFUSED = "peer.refused", "Endpoint change refused"
    ROUTE_CREATED = "route.created", "Route created"
    ROUTE_APPROVED = "route.approved", "Route approved"
    ROUTE_DELETED = "route.deleted", "Route deleted"
    EXIT_ADVERTISED = "exit.advertised", "Exit node advertised"
    EXIT_APPROVED = "exit.approved", "Exit node approved"
    EXIT_REMOVED = "exit.removed", "Exit node removed"
    EXIT_SELECTED = "exit.selected", "Exit node chosen for a node"
    TAG_CREATED = "tag.created", "Tag created"
    TAG_DELETED = "tag.deleted", "Tag deleted"
    NODE_TAGGED = "node.tagged", "Node tags changed"
    GROUP_CREATED = "group.created", "Group created"
    GROUP_UPDATED = "group.updated", "Group changed"
    GROUP_DELETED = "group.deleted", "Group deleted"
    RULE_CREATED = "rule.created", "Access rule created"
    RULE_UPDATED = "rule.updated", "Access rule changed"
    RULE_MOVED = "rule.moved", "Access rule moved"
    RULE_DELETED = "rule.deleted", "Access rule deleted"
    POLICY_DEFAULT_CHANGED = "policy.default", "Policy default changed"
    APIKEY_CREATED = "apikey.created", "API key created"
    APIKEY_REVOKED = "apikey.revoked", "API key revoked"
    APIKEY_DENIED = "apikey.denied", "API key refused"


class PolicyDefault(models.TextChoices):
    """What a network allows where no rule speaks (meshadmin/netmap/policy.py)."""

    ALLOW = "allow", "Allow all (nodes no rule names as a destination accept everything)"
    DENY = "deny", "Deny (every node accepts only what the rules allow)"


class RuleProtocol(models.TextChoices):
    ANY = "any", "any protocol"
    TCP = "tcp", "TCP"
    UDP = "udp", "UDP"
    ICMP = "icmp", "ICMP"
