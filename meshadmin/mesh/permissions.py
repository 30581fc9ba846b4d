"""Who may look at the mesh and who may change it: the roles of dashboard accounts.

Staff users administer. Members of the VIEWER_GROUP may look at everything and change nothing.
Any other account (logged in, but neither) may do neither. Here, below every app that checks
it (the dashboard's pages and socket, the telemetry API, the createadmin command), so none of
them imports another for it.
"""

from __future__ import annotations

__all__ = ["VIEWER_GROUP", "can_edit", "can_view"]

VIEWER_GROUP = "meshadmin-viewers"


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
