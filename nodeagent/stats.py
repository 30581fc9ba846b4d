"""Counters kept by the data path.

The data path bumps plain attributes (slots, no locks: everything runs on one thread).
status.py turns them into the fixed `status --json` shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DROP_REASONS", "Drops", "LossTracker", "PeerStats", "RelayStats"]

DROP_REASONS = ("malformed", "unknown_session", "bad_tag", "replay", "spoofed_source", "no_route",
                "queue_full", "policy", "too_big")


@dataclass(slots=True)
class Drops:
    malformed: int = 0
    unknown_session: int = 0
    bad_tag: int = 0
    replay: int = 0
    spoofed_source: int = 0
    no_route: int = 0
    queue_full: int = 0
    policy: int = 0  # inbound packets the access policy refused
    too_big: int = 0  # outbound packets answered with ICMP "too big" for a narrow path (datapath 3b)

    def as_dict(self) -> dict[str, int]:
        return {r: getattr(self, r) for r in DROP_REASONS}


@dataclass(slots=True)
class RelayStats:
    forwarded_frames: int = 0  # envelopes re-wrapped for another peer (hub role)
    forwarded_bytes: int = 0
    rate_limited: int = 0  # refused by the per-peer relay rate cap
    no_destination: int = 0  # destination unknown or without a session

    def as_dict(self) -> dict[str, int]:
        return {"forwarded_frames": self.forwarded_frames, "forwarded_bytes": self.forwarded_bytes,
                "rate_limited": self.rate_limited, "no_destination": self.no_destination}


class LossTracker:
    """Counts gaps in the counters of one keypair's received frames (after authentication).

    A frame with a counter beyond highest+1 adds the gap to `lost`; a late frame that fills a
    gap takes one back (it was reordered, not lost). Replays never reach here.
    """

    __slots__ = ("highest", "lost")

    def __init__(self) -> None:
        self.highest = -1
        self.lost = 0

    def seen(self, counter: int) -> None:
        h = self.highest
        if counter > h:
            if h >= 0:
                self.lost += counter - h - 1
            else:
                self.lost += counter  # counters start at 0: frames before the first one seen
            self.highest = counter
        elif self.lost > 0:
            self.lost -= 1


@dataclass(slots=True)
class PeerStats:
    tx_frames: int = 0
    rx_frames: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    replayed_frames: int = 0
    bad_frames: int = 0
    denied_frames: int = 0  # frames whose packet the access policy refused
    lost_before: int = 0  # lost frames of keypairs already retired
    rtt_ms: float | None = None
    relayed_frames: int = 0  # frames this node forwarded on behalf of the peer (hub role)
    handshakes: int = 0  # completed data-key handshakes (either side)
    # our attempts that brought no keys within the retry time (sessions.py; each is retried, and an
    # attempt whose CHALLENGE failed ends so too), CHALLENGEs that failed by reason
    # (control/handshakes.py), and series given up after REKEY_ATTEMPT_TIME (sessions.py)
    handshake_timeouts: int = 0
    handshake_failures: dict[str, int] = field(default_factory=dict)
    handshake_give_ups: int = 0
    path_changes: int = 0  # the path to the peer changed (direct <-> relay, another relay): paths/select.py
    trackers: dict = field(default_factory=dict)  # receiver index -> LossTracker

    @property
    def lost_frames(self) -> int:
        return self.lost_before + sum(t.lost for t in self.trackers.values())

    def retire(self, index: int) -> None:
        t = self.trackers.pop(index, None)
        if t is not None:
            self.lost_before += t.lost

