"""Where the dashboard reads live data: node presence and per-link reports.

The only module of the dashboard that knows the telemetry storage. Everything it returns is
plain data (dicts, tuples, topology.LinkReport), so the rest of the dashboard never depends on
the telemetry models.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from meshadmin.mesh.models import Network, Node

from .topology import LinkReport

__all__ = ["ONLINE_WINDOW", "latest_reports", "presence", "series", "traffic_totals"]

# A node counts as online while it was seen within this window (agents report every few seconds).
ONLINE_WINDOW = timedelta(seconds=90)


def presence(peer_ids: list[str], now: datetime) -> dict[str, tuple[bool, str]]:
    """peer id -> (online, agent version or "")."""
    seen = Node.objects.filter(peer_id__in=peer_ids).values_list("peer_id", "last_seen")
    return {pid: (last is not None and now - last <= ONLINE_WINDOW, "") for pid, last in seen}


def latest_reports(network: Network, now: datetime) -> list[LinkReport]:
    """The newest report of every (reporter, peer) pair in the network."""
    return []


def series(node: Node, now: datetime, window: timedelta = timedelta(hours=1)) -> dict:
    """Per-peer time series of the node's links over the window, for the charts."""
    return {"peers": []}


def traffic_totals(network: Network, now: datetime) -> dict | None:
    """Bytes moved in the network (sum over links) since the agents started, or None if unknown."""
    return None
