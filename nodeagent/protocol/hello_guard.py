"""The HELLO replay and flood guard of a handshake responder. Pure (`now` is an argument).

A HELLO is not authenticated until CONFIRM, and a replayed one cannot yield a session (sig_i
must cover the responder's fresh ephemeral), so this is a cheap filter the responder runs before
any asymmetric work (the replay class of WireGuard's CVE-2021-46873), made so that it cannot
lock a peer out:
- a HELLO is refused if its timestamp is not newer than the last one that COMPLETED a
  handshake with that peer (recorded only after CONFIRM verified, so a forged HELLO cannot
  poison the record), or if it is more than HELLO_MAX_FUTURE_S (120 s) ahead of our clock
  (an initiator whose clock is far ahead cannot leave a far-future record behind);
- a record more than HELLO_MAX_FUTURE_S ahead of our own clock is treated as stale (our clock
  went back), so after any jump handshakes recover within one rekey period (120 s);
- HELLOs from one peer closer than 20 ms apart are dropped (flood);
- the flood memory keeps at most `max_tracked` peer ids (claimed ids are unauthenticated).
Agents share one HelloGuard per node between Responder objects.
"""

from __future__ import annotations

from .constants import HANDSHAKE_MIN_INTERVAL_S
from .handshake_errors import HandshakeFlood, ReplayedHello

__all__ = ["HELLO_MAX_FUTURE_S", "HelloGuard"]

HELLO_MAX_FUTURE_S = 120


class HelloGuard:
    """Per-node memory of HELLO timestamps (see the module docstring). One per agent."""

    def __init__(
        self, max_future_s: float = HELLO_MAX_FUTURE_S, min_interval_s: float = HANDSHAKE_MIN_INTERVAL_S
    ) -> None:
        self.max_future_ms = int(max_future_s * 1000)
        self.min_interval_s = min_interval_s
        self.max_tracked = 4096
        self._completed: dict[str, int] = {}  # peer id -> timestamp (ms) of the last completed HELLO
        self._seen_at: dict[str, float] = {}  # peer id -> when we last processed a HELLO from it

    def check(self, peer_id: str, timestamp_ms: int, now: float) -> None:
        now_ms = int(now * 1000)
        if timestamp_ms > now_ms + self.max_future_ms:
            raise ReplayedHello("HELLO timestamp is too far in the future")
        last = self._completed.get(peer_id)
        if last is not None and timestamp_ms <= last and last <= now_ms + self.max_future_ms:
            raise ReplayedHello("HELLO is not newer than the last completed handshake")
        seen = self._seen_at.pop(peer_id, None)
        if seen is not None and 0 <= now - seen < self.min_interval_s:
            self._seen_at[peer_id] = seen
            raise HandshakeFlood("HELLOs from this peer arrive too fast")
        self._seen_at[peer_id] = now  # re-inserted: the dict stays in least-recent-first order
        while len(self._seen_at) > self.max_tracked:  # claimed ids are unauthenticated: bound them
            del self._seen_at[next(iter(self._seen_at))]

    def record(self, peer_id: str, timestamp_ms: int) -> None:
        """Called only once a handshake with this HELLO completed (CONFIRM verified)."""
        if timestamp_ms > self._completed.get(peer_id, -1):
            self._completed[peer_id] = timestamp_ms

    def forget(self, peer_id: str) -> None:
        self._completed.pop(peer_id, None)
        self._seen_at.pop(peer_id, None)
