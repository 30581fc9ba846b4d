"""Mesh models. Only meshadmin/mesh/services/ writes them."""

from .apikeys import ApiKey
from .audit import AuditEvent
from .auth import AuthChallenge, SessionToken
from .networks import Network
from .nodes import Node
from .policies import AccessRule, Group, Tag
from .routes import Route
from .tokens import EnrollmentToken

__all__ = [
    "AccessRule", "ApiKey", "AuditEvent", "AuthChallenge", "EnrollmentToken", "Group", "Network", "Node",
    "Route", "SessionToken", "Tag",
]
