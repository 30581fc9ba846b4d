"""Mesh models. Only meshadmin/mesh/services/ writes them."""

from .audit import AuditEvent
from .auth import AuthChallenge, SessionToken
from .networks import Network
from .nodes import Node
from .routes import Route
from .tokens import EnrollmentToken

__all__ = ["AuditEvent", "AuthChallenge", "EnrollmentToken", "Network", "Node", "Route", "SessionToken"]
