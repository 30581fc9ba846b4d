"""Group names and event types: the only place these strings are written.

Channels dispatches an event `{"type": "netmap.push"}` to the consumer method `netmap_push`.
Group names may only hold ASCII letters, digits, '-', '_' and '.', so networks go by primary key.
"""

from __future__ import annotations

__all__ = [
    "AGENT_REVOKE",
    "NETMAP_PUSH",
    "PRESENCE_UPDATE",
    "TELEMETRY_UPDATE",
    "dashboard_group",
    "node_group",
]

NETMAP_PUSH = "netmap.push"            # {"netmap": netmap_to_dict(...)} -> AgentConsumer.netmap_push
AGENT_REVOKE = "agent.revoke"          # {"reason": str} -> AgentConsumer.agent_revoke (closes 4403)
TELEMETRY_UPDATE = "telemetry.update"  # {"network", "node", "links": [...]} -> dashboard consumers
PRESENCE_UPDATE = "presence.update"    # {"network", "node", "online": bool} -> dashboard consumers


def node_group(peer_id: str) -> str:
    """Every socket of one node (normally one)."""
    return f"node.{peer_id}"


def dashboard_group(network_id: int) -> str:
    """Every dashboard page watching one network."""
    return f"dashboard.{int(network_id)}"
