"""The dashboard's page guard: login required, viewers read, only staff write.

The roles themselves (`can_view`, `can_edit`, the viewer group) are meshadmin/mesh/permissions.py.
Any account that may not view gets 403 on every page; writes by anyone but staff are refused with
403 before a form is even read.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from meshadmin.mesh.permissions import can_edit, can_view

__all__ = ["dashboard_view"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def dashboard_view(view):
    """Login required; viewers may read; only staff may use an unsafe method (else 403)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view(request.user):
            raise PermissionDenied("this account may not use the dashboard")
        if request.method not in SAFE_METHODS and not can_edit(request.user):
            raise PermissionDenied("read-only account")
        return view(request, *args, **kwargs)

    return wrapper
