"""What kind of NAT this node is behind, from what the public hubs saw of its data port. Pure.

Each hub answers our probe with the source address it saw (PROBE_ACK). With `local` our own
addresses and `port` our UDP port:
  - no answer yet                                          -> UNKNOWN
  - a hub saw one of our own addresses and our port        -> PUBLIC (no translation)
  - two hubs saw different addresses or ports              -> HARD (a new mapping per destination:
                                                              a peer cannot predict the port it
                                                              would be given, so punching fails)
  - at least two hubs, all saw the same address and port   -> EASY
  - one hub only                                           -> EASY if it saw our port, else UNKNOWN
                                                              (one sample cannot tell a hard NAT from
                                                              an easy one that had to change the port)
`should_punch(ours, theirs)`: every pair but HARD with HARD is worth trying.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..protocol.disco import NatClass

__all__ = ["classify", "should_punch"]


def classify(observed: Mapping[str, tuple[str, int]], local: Iterable[str], port: int) -> NatClass:
    """`observed`: hub peer id -> the (ip, port) that hub saw."""
    seen = set(observed.values())
    if not seen:
        return NatClass.UNKNOWN
    local = set(local)
    if any(ip in local and p == port for ip, p in seen):
        return NatClass.PUBLIC
    if len(seen) > 1:
        return NatClass.HARD
    if len(observed) >= 2:
        return NatClass.EASY
    ((_ip, p),) = seen
    return NatClass.EASY if p == port else NatClass.UNKNOWN


def should_punch(ours: NatClass, theirs: NatClass) -> bool:
    return not (ours is NatClass.HARD and theirs is NatClass.HARD)
