"""The HELLO replay and flood guard of a handshake responder. Pure (`now` is an argument).

A HELLO is signed by its initiator (handshake.py, version 2), so the guard keeps state only for
HELLOs whose signature verified: a forger cannot write a record, and its HELLOs cost no memory
here. The responder asks the guard twice:
- `check` (read-only, before the signature is verified): refused if the HELLO's timestamp is not
  newer than that of the last authenticated HELLO of that peer (a replay, byte for byte or of an
  older one, whether or not its handshake completed), if it is more than HELLO_MAX_FUTURE_S
  (120 s) ahead of our clock (an initiator whose clock is far ahead cannot leave a far-future
  record behind), or if that peer's last authenticated HELLO is less than 20 ms old (flood);
- `accept` (once the signature verified): the same checks again, atomically, then the HELLO's
  timestamp becomes the peer's record.
A record more than HELLO_MAX_FUTURE_S ahead of our own clock is treated as stale (our clock went
back), so after any clock jump handshakes recover within one rekey period (120 s): the replay
class of WireGuard's CVE-2021-46873, made so that it cannot lock a peer out.

One HelloGuard per node, shared by its Responder objects, which run on worker threads: the
check-and-record of `accept` holds a lock. Records exist only for authenticated peers; `forget`
drops one when the peer leaves.
"""

from __future__ import annotations

import threading

from .constants import HANDSHAKE_MIN_INTERVAL_S
from .handshake_errors import HandshakeFlood, ReplayedHello

__all__ = ["HELLO_MAX_FUTURE_S", "HelloGuard"]

HELLO_MAX_FUTURE_S = 120


class HelloGuard:
    """Per-node memory of authenticated HELLOs (see the module docstring). One per agent."""

    def __init__(
        self, max_future_s: float = HELLO_MAX_FUTURE_S, min_interval_s: float = HANDSHAKE_MIN_INTERVAL_S
    ) -> None:
        self.max_future_ms = int(max_future_s * 1000)
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        # peer id -> (timestamp ms of its last authenticated HELLO, our `now` when we accepted it)
        self._last: dict[str, tuple[int, float]] = {}

    def check(self, peer_id: str, timestamp_ms: int, now: float) -> None:
        """Refuse a replayed, far-future or flooding HELLO; changes nothing."""
        with self._lock:
            self._check(peer_id, timestamp_ms, now)

    def accept(self, peer_id: str, timestamp_ms: int, now: float) -> None:
        """The HELLO's signature verified: check again and make it the peer's record."""
        with self._lock:
            self._check(peer_id, timestamp_ms, now)
            self._last[peer_id] = (timestamp_ms, now)

    def _check(self, peer_id: str, timestamp_ms: int, now: float) -> None:
        now_ms = int(now * 1000)
        if timestamp_ms > now_ms + self.max_future_ms:
            raise ReplayedHello("HELLO timestamp is too far in the future")
        last = self._last.get(peer_id)
        if last is None:
            return
        last_ms, accepted_at = last
        if timestamp_ms <= last_ms and last_ms <= now_ms + self.max_future_ms:
            raise ReplayedHello("HELLO is not newer than the last authenticated one")
        if 0 <= now - accepted_at < self.min_interval_s:
            raise HandshakeFlood("HELLOs from this peer arrive too fast")

    def forget(self, peer_id: str) -> None:
        with self._lock:
            self._last.pop(peer_id, None)

    def __len__(self) -> int:
        return len(self._last)
