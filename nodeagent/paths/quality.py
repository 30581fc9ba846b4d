"""The measured quality of one path to a peer: smoothed RTT and loss over a window of probes. Pure.

Every probe sent on the path is recorded (`sent`), every answer (`acked`) gives an RTT sample
(RFC 6298 smoothing, alpha 1/8) and a success in the loss window; a probe unanswered after
`lost_after` seconds (`expire`) counts as lost. The window is the last LOSS_WINDOW probes.

    score (ms) = smoothed RTT + LOSS_COST_MS x loss fraction     (1 % loss costs as much as 10 ms)

Lower is better. `alive(now, dead_after)`: an answer arrived within `dead_after` seconds.
"""

from __future__ import annotations

from collections import deque

__all__ = ["LOSS_COST_MS", "LOSS_WINDOW", "PathQuality"]

LOSS_WINDOW = 20
LOSS_COST_MS = 1000.0
_PENDING_MAX = 64


class PathQuality:
    __slots__ = ("last_ack", "last_sent", "pending", "results", "rttvar", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None  # seconds
        self.rttvar = 0.0
        self.results: deque[bool] = deque(maxlen=LOSS_WINDOW)  # True: answered
        self.pending: dict[int, float] = {}  # sequence -> sent at
        self.last_ack: float | None = None
        self.last_sent: float | None = None

    def sent(self, seq: int, now: float) -> None:
        if len(self.pending) >= _PENDING_MAX:  # the oldest is long lost
            oldest = min(self.pending, key=self.pending.__getitem__)
            del self.pending[oldest]
            self.results.append(False)
        self.pending[seq] = now
        self.last_sent = now

    def acked(self, seq: int, now: float) -> float | None:
        """The RTT sample in seconds, or None for an answer to no probe of ours (or a second one)."""
        sent = self.pending.pop(seq, None)
        if sent is None:
            return None
        rtt = max(0.0, now - sent)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.results.append(True)
        self.last_ack = now
        return rtt

    def expire(self, now: float, lost_after: float) -> int:
        """Count probes older than `lost_after` as lost; how many."""
        late = [s for s, t in self.pending.items() if now - t > lost_after]
        for s in late:
            del self.pending[s]
            self.results.append(False)
        return len(late)

    @property
    def loss(self) -> float | None:
        if not self.results:
            return None
        return self.results.count(False) / len(self.results)

    def score(self) -> float | None:
        """Lower is better; None until the first answer."""
        if self.srtt is None:
            return None
        return self.srtt * 1000 + LOSS_COST_MS * (self.loss or 0.0)

    def alive(self, now: float, dead_after: float) -> bool:
        return self.last_ack is not None and now - self.last_ack <= dead_after

    def rtt_ms(self) -> float | None:
        return None if self.srtt is None else round(self.srtt * 1000, 3)
