"""The only writers of mesh state.

Each write: validate -> transaction.atomic(save rows, bump Network.serial, AuditEvent) ->
announce(Change). Refusals raise a ServiceError subclass carrying the HTTP status and a
`detail` message; callers (API, admin, commands) translate it and never write rows themselves.
"""

from .errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound, ServiceError

__all__ = ["Conflict", "Forbidden", "InvalidInput", "NotAuthenticated", "NotFound", "ServiceError"]
