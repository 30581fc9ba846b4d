"""A token bucket: a rate cap with a burst. Pure: no clock (`now` is an argument), no I/O.

Used by the data path (tunnel/datapath.py `Peer.bucket`: what a hub relays for one peer,
tunnel/relay.py) and by the handshake admission (control/handshakes.py `HandshakeBucket`).
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` tokens per second with a burst of a tenth of a second (min 64); starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(64.0, rate / 10)
        self.tokens = self.burst
        self.stamp = 0.0

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1
        return True
