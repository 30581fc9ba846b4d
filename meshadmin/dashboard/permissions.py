"""Who may look and who may change things in the dashboard.

Staff users administer. Members of the VIEWER_GROUP may look at everything and change nothing.
Any other account (logged in, but neither) gets 403 on every page. Writes by anyone but staff
are refused with 403 before a form is even read.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

__all__ = ["VIEWER_GROUP", "can_edit", "can_view", "dashboard_view"]

VIEWER_GROUP = "meshadmin-viewers"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def can_edit(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def can_view(user) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    if user.is_staff:
        return True
    cached = getattr(user, "_meshadmin_viewer", None)
    if cached is None:
        cached = user.groups.filter(name=VIEWER_GROUP).exists()
        user._meshadmin_viewer = cached
    return cached


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
