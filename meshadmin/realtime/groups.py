"""Group names and event types: the only place these strings are written.

Channels dispatches an event `{"type": "netmap.push"}` to the consumer method `netmap_push`.
Group names may only hold ASCII letters, digits, '-', '_' and '.', so networks go by primary key.
The agent sockets' events (netmap.changed, agent.revoke) reach each server process once and are
handed to its sockets there (fanout.py), which reads the group from the event: they must name
their `network` / `peer_id`.
"""

from __future__ import annotations

__all__ = [
    "AGENT_REVOKE",
    "ALL_DASHBOARDS_GROUP",
    "DASHBOARD_CHANGED",
    "NETMAP_CHANGED",
    "NETMAP_PREFETCH",
    "PRESENCE_UPDATE",
    "SESSION_LOGOUT",
    "TELEMETRY_UPDATE",
    "TELEMETRY_WATCH",
    "agents_group",
    "dashboard_group",
    "node_group",
    "user_group",
]

NETMAP_CHANGED = "netmap.changed"      # {"network", "serial"} -> AgentConsumer.netmap_changed
# {"network", "serial"}, at once when a change's push must wait out the debounce after the
# last push: each process loads the network's view meanwhile (fanout.py); no socket gets it
NETMAP_PREFETCH = "netmap.prefetch"
# {"network", "seconds"}, from a dashboard page of the network while it is open: each process
# asks the network's agents for their counters more often for that long (stats_rate.py); no
# socket gets it
TELEMETRY_WATCH = "telemetry.watch"
AGENT_REVOKE = "agent.revoke"          # {"peer_id", "reason"} -> AgentConsumer.agent_revoke (closes 4403)
TELEMETRY_UPDATE = "telemetry.update"  # {"network", "peer_id"}: new samples -> dashboard consumers
PRESENCE_UPDATE = "presence.update"    # {"network", "peer_id", "online": bool} -> dashboard consumers
DASHBOARD_CHANGED = "dashboard.changed"  # an admin write changed a network -> DashboardConsumer
SESSION_LOGOUT = "session.logout"      # the user logged out -> DashboardConsumer closes the socket

# every dashboard socket joins it, so a network created after the socket opened still reaches it
ALL_DASHBOARDS_GROUP = "dashboard.all"


def node_group(peer_id: str) -> str:
    """Every socket of one node (normally one)."""
    return f"node.{peer_id}"


def agents_group(network_id: int) -> str:
    """Every agent socket of one network (they recompute their own map on netmap.changed)."""
    return f"agents.{int(network_id)}"


def dashboard_group(network_id: int) -> str:
    """Every dashboard page watching one network."""
    return f"dashboard.{int(network_id)}"


def user_group(user_id: int) -> str:
    """Every dashboard socket of one user (logout closes them all)."""
    return f"dashboard.user.{int(user_id)}"
