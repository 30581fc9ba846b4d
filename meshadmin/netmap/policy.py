"""Pure reachability policy: which node may reach which, and which relay a pair should fall back to.

Today the rule is the default mesh: every active node with an overlay address may reach every
other one. Access rules, when they come, are added here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: this module never touches the database
    from .snapshot import NodeRow

# True while may_reach is "every active member reaches every other": compute.delta_for relies
# on it to share one change set between all ordinary nodes. Set False with the first real rule.
FULL_MESH = True

__all__ = [
    "FULL_MESH", "fallback_relay", "is_relay_candidate", "may_reach", "may_use_exit", "rank_relays",
    "relay_choices",
]


def may_reach(a: NodeRow, b: NodeRow) -> bool:
    return a.pk != b.pk and a.active and b.active and a.overlay_ip is not None and b.overlay_ip is not None


def may_use_exit(a: NodeRow, exit_node: NodeRow) -> bool:
    """Whether `a` may send its internet traffic through the approved exit node `exit_node`: its
    map lists the exit node's default routes only then (and its `use_exit` only then). Today every
    node that may reach the exit node may use it; access rules narrow it here."""
    return may_reach(a, exit_node)


def is_relay_candidate(n: NodeRow) -> bool:
    """Public nodes may relay for others (a relay-flagged node too)."""
    return n.active and n.overlay_ip is not None and (n.is_public or n.is_relay)


def rank_relays(relays: list[NodeRow]) -> list[NodeRow]:
    """Preference order of relays: those with a live endpoint first, then lowest peer id."""
    return sorted(relays, key=lambda r: (r.endpoint_ip is None, r.peer_id))


def relay_choices(peer: NodeRow, ranked: list[NodeRow]) -> tuple[str | None, str | None]:
    """The two best relays towards `peer` (never `peer` itself); (None, None) for a relay peer.
    A viewer that is the first choice uses the second (see fallback_relay)."""
    if is_relay_candidate(peer):
        return None, None
    options = [r.peer_id for r in ranked if r.pk != peer.pk][:2]
    return (options[0] if options else None), (options[1] if len(options) > 1 else None)


def fallback_relay(me: NodeRow, peer: NodeRow, relays: list[NodeRow]) -> str | None:
    """The relay to use towards `peer` when no direct path works: None if `peer` is itself a relay
    or no third relay exists. Relays with a live endpoint first, then lowest peer id."""
    first, second = relay_choices(peer, rank_relays(relays))
    return second if first == me.peer_id else first
