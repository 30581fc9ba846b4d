"""Link election: which control link a pair of peers keeps when a second one opens. No I/O.

Both peers may dial each other at the same moment, so each side can end up with two links to
the same peer. Both sides must keep the same one without talking about it:
  1. a new link from the side that dialed the existing one (a redial: that peer restarted, or
     its old link died without us noticing) replaces the existing link;
  2. two links dialed by different sides: the one dialed by the lower peer id wins, on both
     sides (each side compares the same two ids).
The loser is closed with CloseReason.REPLACED and the keys of its handshake are dropped
(control/links.py): only the kept link's keys are certain to be the same on both sides.
"""

from __future__ import annotations

__all__ = ["keep_existing_link"]


def keep_existing_link(local_id: str, peer_id: str, existing_dialer: str, new_dialer: str) -> bool:
    """True: keep the existing open link and close the new one; False: the new one replaces it.

    `existing_dialer` / `new_dialer`: the peer id of the side that dialed each link (ours or
    `peer_id`)."""
    preferred = min(local_id, peer_id)
    return new_dialer != existing_dialer and new_dialer != preferred
