"""Channel-layer names of the dashboard's browser sockets, besides those of the live link.

The per-network group and the telemetry/presence event types are the live link's
(meshadmin.realtime.groups: `dashboard_group(network_id)`, TELEMETRY_UPDATE, PRESENCE_UPDATE).
Here: a group every dashboard socket joins, one per user (so logout reaches all of that user's
sockets), and the two event types only the dashboard sends.
"""

from __future__ import annotations

from meshadmin.realtime.groups import dashboard_group as network_group

__all__ = ["ALL_NETWORKS_GROUP", "CHANGED", "SESSION_LOGOUT", "network_group", "user_group"]

ALL_NETWORKS_GROUP = "dashboard.all"  # a network created after the socket opened still reaches it
CHANGED = "dashboard.changed"  # event type: an admin write changed a network (from change_announced)
SESSION_LOGOUT = "session.logout"  # event type: the user logged out; close the socket


def user_group(user_id: int) -> str:
    return f"dashboard.user.{int(user_id)}"
