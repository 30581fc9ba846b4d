"""How long a change took to reach the agents: the two push histograms of meshadmin/metrics/events.py.

A push's event carries `changed_at`, the wall-clock time its change (the first of a debounced
burst) committed (realtime/tasks.py). Every agent socket that receives the event reports here once,
whatever it did with it (`handled`, with the time it sent a frame, or None when it sent none):

  - each frame sent is one observation of `shadowmesh_netmap_push_seconds` (change -> this agent);
  - per push and server process, the latest of those sends is one observation of
    `shadowmesh_netmap_push_last_agent_seconds` (change -> the last agent of this process). It is
    observed when as many sockets as this process had in the network's group when the event
    arrived have reported, or WINDOW_S after the first report (a socket that closed meanwhile
    never reports). With one server process that is the last agent; with several, each process
    observes its own last one, and the slowest of them is the last agent of the whole server.

Sockets join and leave the count with `joined` / `left` (consumers.py, around their group
membership). Wall-clock times are compared across processes (a Celery worker may have sent the
event), which assumes the server's processes share one clock (one host, or synchronised hosts).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from meshadmin.metrics import events

from .per_loop import PerLoop

__all__ = ["WINDOW_S", "PushLatency", "push_latency"]

WINDOW_S = 30.0
DONE_MEMORY = 256  # pushes remembered as finished, so a straggler does not open them again


@dataclass
class _Push:
    changed_at: float
    expected: int
    reported: int = 0
    last_sent: float | None = None
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class PushLatency:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *,
                 observe_one: Callable[[float], None] = events.push_latency,
                 observe_last: Callable[[float], None] = events.push_last_agent_latency) -> None:
        self.loop = loop
        self.observe_one = observe_one
        self.observe_last = observe_last
        self.sockets: Counter[int] = Counter()  # network id -> this process's agent sockets in its group
        self.open: dict[tuple[int, int], _Push] = {}
        self.done: OrderedDict[tuple[int, int], None] = OrderedDict()

    def joined(self, network_id: int) -> None:
        self.sockets[network_id] += 1

    def left(self, network_id: int) -> None:
        self.sockets[network_id] -= 1
        if self.sockets[network_id] <= 0:
            del self.sockets[network_id]

    def handled(self, network_id: int, serial: int, changed_at: float | None, sent_at: float | None) -> None:
        """One socket of `network_id` dealt with the push of `serial` (sent a frame at `sent_at`)."""
        if changed_at is None:
            return  # an event without its change's time (sent by an older server process)
        key = (network_id, serial)
        if key in self.done:
            return
        push = self.open.get(key)
        if push is None:
            push = self.open[key] = _Push(changed_at, max(self.sockets[network_id], 1))
            if self.loop is not None:
                push.timer = self.loop.call_later(WINDOW_S, self._finish, key)
        if sent_at is not None:
            self.observe_one(sent_at - changed_at)
            push.last_sent = sent_at if push.last_sent is None else max(push.last_sent, sent_at)
        push.reported += 1
        if push.reported >= push.expected:
            self._finish(key)

    def _finish(self, key: tuple[int, int]) -> None:
        push = self.open.pop(key, None)
        if push is None:
            return
        if push.timer is not None:
            push.timer.cancel()
        if push.last_sent is not None:
            self.observe_last(push.last_sent - push.changed_at)
        self.done[key] = None
        while len(self.done) > DONE_MEMORY:
            self.done.popitem(last=False)


_trackers: PerLoop[PushLatency] = PerLoop()


def push_latency() -> PushLatency:
    """The tracker of the running loop (the one that serves this process's agent sockets)."""
    return _trackers.current(lambda: PushLatency(asyncio.get_running_loop()))


def now() -> float:
    return time.time()
