"""Group names and event types: the only place these strings are written.

Channels dispatches an event `{"type": "netmap.push"}` to the consumer method `netmap_push`.
Group names may only hold ASCII letters, digits, '-', '_' and '.', so networks go by primary key.
"""

from __future__ import annotations

__all__ = [
    "AGENT_REVOKE",
    "NETMAP_CHANGED",
    "PRESENCE_UPDATE",
    "TELEMETRY_UPDATE",
    "agents_group",
    "dashboard_group",
    "node_group",
]

NETMAP_CHANGED = "netmap.changed"      # {"network", "serial"} -> AgentConsumer.netmap_changed
AGENT_REVOKE = "agent.revoke"          # {"reason": str} -> AgentConsumer.agent_revoke (closes 4403)
TELEMETRY_UPDATE = "telemetry.update"  # {"network", "node", "links": [...]} -> dashboard consumers
PRESENCE_UPDATE = "presence.update"    # {"network", "node", "online": bool} -> dashboard consumers


def node_group(peer_id: str) -> str:
    """Every socket of one node (normally one)."""
    return f"node.{peer_id}"


def agents_group(network_id: int) -> str:
    """Every agent socket of one network (they recompute their own map on netmap.changed)."""
    return f"agents.{int(network_id)}"


def dashboard_group(network_id: int) -> str:
    """Every dashboard page watching one network."""
    return f"dashboard.{int(network_id)}"
