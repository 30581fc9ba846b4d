"""Channel-layer names the dashboard uses for its browser sockets.

`network_group` is the group the live link forwards agent reports and mesh changes to (DESIGN:
`dashboard.<network>`); `user_group` lets a logout reach every socket of that user.
"""

from __future__ import annotations

__all__ = ["ALL_NETWORKS_GROUP", "CHANGED", "SESSION_LOGOUT", "network_group", "user_group"]

ALL_NETWORKS_GROUP = "dashboard.all"  # a network created after the socket opened still reaches it
CHANGED = "dashboard.changed"  # event type: an admin write changed a network (from change_announced)
SESSION_LOGOUT = "session.logout"  # event type: the user logged out; close the socket


def network_group(network_id: int) -> str:
    return f"dashboard.{int(network_id)}"


def user_group(user_id: int) -> str:
    return f"dashboard.user.{int(user_id)}"
