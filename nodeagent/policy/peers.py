"""Whether the access policy lets a node this agent did not get from the server be its peer
(a node found in the DHT, say, while the server is away). Pure.

The server puts in a node's netmap every peer the policy lets it talk to, in either direction.
A node whose policy filters (default "deny") therefore may peer only with the netmap's peers:
whatever else the agent learns, from the DHT or anywhere, never grants more than the policy.
A node that does not filter (default "allow") accepts everyone, as it accepts every packet.
"""

from __future__ import annotations

from ..protocol import netmap as nm

__all__ = ["may_peer"]


def may_peer(netmap: nm.NetMap | None, peer_id: str) -> bool:
    """May `peer_id` be a peer under the applied netmap's policy? Without a netmap there is no
    policy to apply (the agent filters nothing either): True."""
    if netmap is None or not netmap.policy.filters:
        return True
    return netmap.peer(peer_id) is not None
