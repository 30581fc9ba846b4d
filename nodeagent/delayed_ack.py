"""Netmap acknowledgements sent a little later, and only the newest of those that came meanwhile.

An `ack` tells the server which serial the agent applied; the server only stores it (the presence
record). Sent at once, every agent of a network answers a change while the server is still sending
that change to the rest of the network, and on a server with thousands of sockets reading and
storing those answers takes a large share of the time the change needs to reach its last agent.
Each link therefore waits a random time in ACK_DELAY_S before it acknowledges, and maps applied
meanwhile are covered by one ack of the newest serial (a burst of changes costs one answer).

The map itself is applied at once; only the bookkeeping waits. A link that closes first drops its
pending ack: the next login names the serial held, and its answer is acknowledged in turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["ACK_DELAY_S", "DelayedAck", "ack_delay"]

log = logging.getLogger(__name__)

ACK_DELAY_S = (1.5, 3.0)  # each ack waits a random time in this range (seconds)


def ack_delay(rnd: float, bounds: tuple[float, float] = ACK_DELAY_S) -> float:
    """The wait before an ack, `rnd` in [0, 1) spreading a fleet over `bounds` (low, high)."""
    low, high = bounds
    if not 0.0 <= rnd < 1.0 or low < 0 or high < low:
        raise ValueError("0 <= rnd < 1 and 0 <= low <= high")
    return low + (high - low) * rnd


class DelayedAck:
    """The pending ack of one link: `ack(serial)` schedules it (or raises the serial of the one
    already pending), `close()` drops it. With bounds (0, 0) every ack goes out at once."""

    def __init__(self, send: Callable[[int], Awaitable[None]], rng: Callable[[], float],
                 bounds: tuple[float, float] = ACK_DELAY_S) -> None:
        ack_delay(0.0, bounds)  # refuse bad bounds here, not at the first ack
        self._send, self._rng, self._bounds = send, rng, bounds
        self._serial: int | None = None  # the serial of the pending ack, until its wait ends
        self._tasks: set[asyncio.Task] = set()
        self.sent = 0
        self.merged = 0  # acks not sent: a newer serial went in their place

    async def ack(self, serial: int) -> None:
        if self._bounds[1] <= 0:
            await self._send(serial)
            self.sent += 1
            return
        if self._serial is not None:  # one is waiting: it will carry this serial instead
            self.merged += 1
            self._serial = max(self._serial, serial)
            return
        self._serial = serial
        task = asyncio.get_running_loop().create_task(self._later(ack_delay(self._rng(), self._bounds)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        serial, self._serial = self._serial, None
        if serial is None:
            return
        try:
            await self._send(serial)
            self.sent += 1
        except Exception as exc:  # the link closed meanwhile: the next login is acknowledged instead
            log.debug("ack of serial %d not sent: %s: %s", serial, type(exc).__name__, exc)

    async def close(self) -> None:
        tasks, self._tasks, self._serial = list(self._tasks), set(), None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
