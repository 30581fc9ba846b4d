"""Where a path is chosen: for each peer, direct or through the relay hub its config names.

A peer's `via` (config file or netmap) names a public peer that relays for it. What that means
depends on the mode:
  - serverless: `via` IS the path; the peer is reached through the hub only (never dialed);
  - enrolled:   `via` is a fallback, used while no direct control link with the peer is up;
                the peer is dialed directly too, and the path moves back when that link comes up.
A relay that is not one of our peers (or names the peer itself) is no path: direct.

`choose_relay` is the decision, a pure function of those facts. `PathSelector` keeps every
peer's `hub` (what the data path reads, tunnel/datapath.py outbound step 6) equal to it. It is
asked again whenever an input changes:
  1. a peer is added: that peer, and every peer that names it as its relay;
  2. a peer is removed: every peer it was the hub for;
  3. a peer's config changes (endpoint, relay, routes, identity);
  4. a direct control link with a peer comes up or goes down (control/links.py).
When the path changes it is logged (once the agent runs) and counted
(`peer.stats.path_changes`), and packets parked for the peer are flushed if the new hub already
has keys.

That hub (`peer.hub`) carries the peer's handshakes and rekeys (RELAY_HANDSHAKE). The DATA of
a relayed peer may take another path (`peer.data_hub`): `data_path(peer, hub)` (traversal.py,
enrolled mode) answers None for a direct path proven by hole punching (the peer's `endpoint`
is then that path's address), or the hub to relay through, which may be another hub than
`hub` when it measured cheaper (paths/choice.py). Without it, data follows `hub`. The traversal
asks again (`resolve`) whenever its choice changes.

NAT traversal (candidates.py, natclass.py, punch.py, quality.py, choice.py) lives in this
package too, as pure code; traversal.py carries it out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: this module never imports the data path or the peer set
    from ..config import PeerConfig
    from ..peers import PeerSet
    from ..tunnel.datapath import Peer

__all__ = ["PathSelector", "choose_relay"]

log = logging.getLogger(__name__)


def choose_relay(peer_id: str, via: str | None, known: Container[str], *, via_is_fallback: bool,
                 direct_link_up: bool) -> str | None:
    """The peer id of the hub that relays our traffic to `peer_id`, or None for the direct path.

    `known`: the peer ids we have; `via_is_fallback`: enrolled mode; `direct_link_up`: a direct
    control link with `peer_id` is up right now."""
    if not via or via == peer_id or via not in known:
        return None
    if via_is_fallback and direct_link_up:
        return None
    return via


class PathSelector:
    """Keeps `peer.hub` equal to `choose_relay` for every peer of the peer set (a listener of
    peers.PeerSet; control/links.py asks again when a direct link changes), and `peer.data_hub`
    equal to `data_path`'s answer."""

    def __init__(self, peers: PeerSet, *, via_is_fallback: bool, direct_link_up: Callable[[str], bool],
                 flush_pending: Callable[[Peer], None], announce: Callable[[], bool],
                 data_path: Callable[[Peer, Peer], Peer | None] | None = None,
                 on_change: Callable[[Peer], None] | None = None) -> None:
        """`peers`: the PeerSet (`get`, iteration); `direct_link_up(peer_id)`: a direct control
        link is up; `flush_pending(peer)`: send what the data path parked for the peer;
        `announce()`: log path changes (false while the agent starts); `data_path(peer, hub)`:
        where a relayed peer's data goes (None: direct), default `hub`; `on_change(peer)`: the
        peer's data path (`peer.path`) just changed."""
        self.peers = peers
        self.via_is_fallback = via_is_fallback
        self.direct_link_up = direct_link_up
        self.flush_pending = flush_pending
        self.announce = announce
        self.data_path = data_path
        self.on_change = on_change

    def resolve(self, peer: Peer) -> None:
        pid = peer.config.peer_id
        hub_id = choose_relay(pid, peer.config.via, self.peers.by_id, via_is_fallback=self.via_is_fallback,
                              direct_link_up=self.via_is_fallback and self.direct_link_up(pid))
        hub = None if hub_id is None else self.peers.get(hub_id)
        data = hub if hub is None or self.data_path is None else self.data_path(peer, hub)
        if hub is not peer.hub or data is not peer.data_hub:
            changed = data is not peer.data_hub
            if changed:
                peer.stats.path_changes += 1
                if self.announce():
                    log.info("path to %s: %s", peer.config.name,
                             "direct" if data is None else f"relay via {data.config.name}",
                             extra={"event": "peer.path_changed", "peer_id": pid,
                                    "path": "direct" if data is None else f"relay:{data.config.peer_id}"})
            peer.hub = hub
            peer.data_hub = data
            if changed and self.on_change is not None:
                self.on_change(peer)
            if (peer if data is None else data).ring.current is not None:
                self.flush_pending(peer)

    # --- the peer set changed (peers.PeerSet listener) ------------------------------------------
    def peer_added(self, peer: Peer) -> None:
        self.resolve(peer)
        pid = peer.config.peer_id
        for other in self.peers:  # peers that name this one as their relay
            if other.config.via == pid:
                self.resolve(other)

    def peer_removed(self, peer: Peer, revoked: bool) -> None:
        for other in self.peers:
            if other.hub is peer:
                data = other.data_hub
                other.hub = None  # the hub setter clears data_hub too...
                other.data_hub = data  # ...so put it back: resolve then sees the move (counted, told)
                self.resolve(other)
            elif other.data_hub is peer:  # its data took this peer while its handshakes keep another hub
                self.resolve(other)

    def peer_changed(self, peer: Peer, old_config: PeerConfig, reset_sessions: bool) -> None:
        self.resolve(peer)
