"""How big a packet the direct path to one address carries, found with our own probes: a
packetization-layer path MTU search in the spirit of RFC 8899, in our PROBE frames. Pure: time
in, events out.

Why: the kernel learns a path MTU only from an ICMP "fragmentation needed" / "packet too big".
A router that drops big packets without one (its ICMP filtered, a tunnel further on that eats
them: an ICMP black hole) leaves the kernel sure that 1,500 bytes pass, every full-size frame
vanishes and a TCP stream through the tunnel stalls for good. With the size found here, the data
path answers the packets too big for the path with ICMP into the TUN, as for a path the kernel
knows (tunnel/datapath.py step 3b), and the overlay's TCP cuts smaller segments.

Sizes are PROBE payload sizes. A PROBE frame has the overhead of a DATA frame, so a size that
crosses is exactly the largest overlay packet a data frame can carry on that path (`fits`).

One `MtuSearch` per address a node sends data to directly (a direct peer, a hub):
  IDLE    nothing in flight: a check is due at once, then RECHECK_S after a result (an OK or
          NARROW path may have changed since), DEAD_RETRY_S after DEAD.
  CHECK   a probe of the full size (the overlay MTU), again every LOST_AFTER_S while unanswered:
          its answer makes the path OK; CHECK_TRIES unanswered ones start a SEARCH (one lost
          probe is no proof: paths lose packets).
  SEARCH  SEARCH_ROUNDS rounds, SEARCH_ROUND_S apart, each a probe of every size of the ladder
          (the full size included); when the full size is answered the path is OK at once,
          else after the last round `fits` is the largest size answered in any round (NARROW),
          or nothing was answered at all (DEAD: the path is down, which is not ours to judge;
          what was known before stays). Two rounds, so that one lost probe rarely costs a size.
A result is an event (`Found`) only when it changes what the data path should enforce: the
largest size that fits, or None when the full size fits or nothing is known.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "CHECK_TRIES",
    "DEAD_RETRY_S",
    "LOST_AFTER_S",
    "RECHECK_S",
    "SEARCH_ROUNDS",
    "SEARCH_ROUND_S",
    "UNDERLAY_MTUS",
    "Found",
    "MtuSearch",
    "SendMtuProbe",
    "State",
    "ladder",
]

LOST_AFTER_S = 1.0
CHECK_TRIES = 3
SEARCH_ROUNDS = 2
SEARCH_ROUND_S = 1.0
RECHECK_S = 600.0  # as RFC 8899's PMTU_RAISE_TIMER, and the kernel's lifetime of a learned path MTU
DEAD_RETRY_S = 30.0
# underlay MTUs met in the field (Ethernet, PPPoE, cloud and tunnel links, IPv6's minimum, ...)
UNDERLAY_MTUS = (1500, 1492, 1480, 1472, 1460, 1450, 1440, 1420, 1400, 1380, 1360, 1340, 1320, 1300,
                 1280, 1240, 1200, 1100, 1000, 900, 800, 700, 576)


class State(Enum):
    IDLE = "idle"
    CHECK = "check"
    SEARCH = "search"


@dataclass(frozen=True, slots=True)
class SendMtuProbe:
    sequence: int
    size: int  # the PROBE payload, padding included


@dataclass(frozen=True, slots=True)
class Found:
    fits: int | None  # the largest packet the path carries; None: the full size, or unknown


Event = SendMtuProbe | Found


def ladder(full: int, overhead: int, floor: int, mtus: Iterable[int] = UNDERLAY_MTUS) -> tuple[int, ...]:
    """The probe sizes of a search, largest first: `full`, then every underlay MTU of `mtus` less
    `overhead` (the underlay's IP and UDP headers and the frame's) that is smaller than `full`
    and at least `floor`."""
    if full < floor:
        raise ValueError(f"full size {full} below the floor {floor}")
    sizes = {full} | {m - overhead for m in mtus if floor <= m - overhead < full}
    return tuple(sorted(sizes, reverse=True))


class MtuSearch:
    """The search for one address (see the module docstring). `sizes`: `ladder(...)`."""

    __slots__ = ("best", "checked_at", "fits", "next_at", "pending", "result", "round_at", "rounds",
                 "seq", "sizes", "state", "tries")

    def __init__(self, sizes: tuple[int, ...], *, now: float, wait_s: float = 0.0) -> None:
        """`wait_s`: the first check is due this long after `now` (the caller spreads many)."""
        if not sizes or list(sizes) != sorted(set(sizes), reverse=True):
            raise ValueError("sizes must be distinct, largest first")
        self.sizes = sizes
        self.state = State.IDLE
        self.next_at = now + wait_s
        self.seq = 0
        self.pending: dict[int, int] = {}  # sequence -> size, of the attempt in flight
        self.tries = 0
        self.rounds = 0
        self.round_at = 0.0
        self.fits: int | None = None  # what the data path enforces now (None: nothing)
        self.result = "unknown"  # "unknown", "ok", "narrow", "dead": the last attempt's outcome
        self.best = 0  # the largest size answered in the search in flight
        self.checked_at: float | None = None

    @property
    def full(self) -> int:
        return self.sizes[0]

    def _probe(self, size: int) -> SendMtuProbe:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.pending[self.seq] = size
        return SendMtuProbe(self.seq, size)

    def tick(self, now: float) -> list[Event]:
        if self.state is State.IDLE:
            if now < self.next_at:
                return []
            self.state, self.tries, self.round_at = State.CHECK, 1, now
            self.pending.clear()
            return [self._probe(self.full)]
        if self.state is State.CHECK:
            if now - self.round_at < LOST_AFTER_S:
                return []
            if self.tries < CHECK_TRIES:
                self.tries += 1
                self.round_at = now
                return [self._probe(self.full)]
            self.state, self.rounds, self.best, self.round_at = State.SEARCH, 1, 0, now
            return [self._probe(size) for size in self.sizes]
        if now - self.round_at < SEARCH_ROUND_S:
            return []
        if self.rounds < SEARCH_ROUNDS:
            self.rounds += 1
            self.round_at = now
            return [self._probe(size) for size in self.sizes]
        if self.best:
            return self._finish(now, "narrow", self.best)
        return self._finish(now, "dead", None)

    def on_ack(self, sequence: int, now: float) -> list[Event]:
        """The answer to our probe `sequence` (unknown or stale ones are ignored)."""
        size = self.pending.pop(sequence, None)
        if size is None or self.state is State.IDLE:
            return []
        if size == self.full:
            return self._finish(now, "ok", None)
        self.best = max(self.best, size)
        return []

    def _finish(self, now: float, result: str, fits: int | None) -> list[Event]:
        self.state = State.IDLE
        self.pending.clear()
        self.result = result
        self.checked_at = now
        self.next_at = now + (DEAD_RETRY_S if result == "dead" else RECHECK_S)
        if result == "dead":
            return []  # a path that answers nothing says nothing about its size: keep what we had
        if fits == self.fits:
            return []
        self.fits = fits
        return [Found(fits)]

    def status(self, now: float) -> dict[str, object]:
        return {
            "state": self.state.value if self.state is not State.IDLE else self.result,
            "fits": self.full if self.result == "ok" else self.fits,
            "checked_ago_s": None if self.checked_at is None else round(now - self.checked_at, 3),
        }
