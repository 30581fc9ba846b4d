"""How often this server process asks its agents for their counters (`telemetry` messages).

An agent reports its counters every 2 s unless the server says otherwise. Each report is a frame
the server reads, decodes and stores; at 10,000 agents on two processes that is 2,500 frames a
second per process, on the event loop that also hands out netmap changes (measured: a change
reached the last of 10,000 agents in 6.6 s p99 with the reports against 2.5 s without them). So
each process keeps the reports of its agent sockets within a budget, SHADOWMESH_AGENT_STATS_BUDGET
reports per second (250 by default; 0: no budget): the interval it asks for is its number of
agent sockets divided by the budget, at least FLOOR_S (the agent's own 2 s: a process with up to
500 sockets asks for nothing else) and at most CEILING_S (presence.STALE_AFTER counts on it).

A socket whose agent named the feature in `auth` is told the interval after its first map. The
process checks every CHECK_S whether the interval moved by a factor of RETELL or more since it
last told its sockets (a restart fills a process with thousands of sockets within a minute, and
the first ones heard the floor) and, if so, tells every such socket the new one. Agents that do
not take `telemetry` keep their own interval and still count toward the budget.

The policy is one function of two numbers (`interval_for`); `StatsRate` keeps the count of one
process; sending is the socket's (AgentConsumer.tell_stats_interval).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

from django.conf import settings

from .per_loop import PerLoop

__all__ = ["CEILING_S", "CHECK_S", "DEFAULT_BUDGET", "FLOOR_S", "RETELL", "StatsRate", "interval_for",
           "stats_rate"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 250  # reports per second per server process (SHADOWMESH_AGENT_STATS_BUDGET)
FLOOR_S = 2.0  # the agent's own interval (nodeagent.server_link.STATS_INTERVAL_S)
CEILING_S = 30.0
CHECK_S = 10.0
RETELL = 1.5


class Listener(Protocol):
    """What the bookkeeping needs of a socket whose agent takes `telemetry` (AgentConsumer)."""

    def tell_stats_interval(self, interval_s: float) -> Coroutine[Any, Any, None]: ...


def interval_for(sockets: int, budget: float) -> float:
    """The interval that keeps `sockets` agents' reports within `budget` per second, bounded by
    FLOOR_S and CEILING_S, to a tenth of a second (a budget of 0 or less: no budget, FLOOR_S)."""
    if budget <= 0:
        return FLOOR_S
    return round(min(CEILING_S, max(FLOOR_S, sockets / budget)), 1)


def budget() -> float:
    return float(getattr(settings, "SHADOWMESH_AGENT_STATS_BUDGET", DEFAULT_BUDGET))


class StatsRate:
    """The agent sockets of one event loop (server process), and the interval they were told."""

    def __init__(self) -> None:
        self.sockets = 0  # every logged-in agent socket of the process
        self.listeners: weakref.WeakSet[Listener] = weakref.WeakSet()  # those that take `telemetry`
        self.told = FLOOR_S  # the interval the listeners were last told all together
        self.retold = 0  # times every listener was told a new interval
        self._checker: asyncio.Task | None = None

    def current(self) -> float:
        return interval_for(self.sockets, budget())

    def joined(self, socket: Listener | None) -> float:
        """A socket logged in (`socket`: itself if its agent takes `telemetry`, else None);
        returns the interval to tell it."""
        self.sockets += 1
        if socket is not None:
            self.listeners.add(socket)
        if self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(self._check_forever())
        return self.current()

    def left(self, socket: Listener | None) -> None:
        self.sockets = max(0, self.sockets - 1)
        if socket is not None:
            self.listeners.discard(socket)

    def due(self) -> float | None:
        """The interval to tell every listener now, or None while the last one told is close enough."""
        now = self.current()
        if now >= self.told * RETELL or now * RETELL <= self.told:
            return now
        return None

    async def check(self) -> None:
        """Tell every listener the new interval when it moved far enough (one socket after the
        other: the same small frame each, nothing to wait for)."""
        interval = self.due()
        if interval is None:
            return
        log.info("asking %d agent sockets for counters every %.1f s (was %.1f s; %d sockets)",
                 len(self.listeners), interval, self.told, self.sockets,
                 extra={"event": "telemetry.interval"})
        self.told = interval
        self.retold += 1
        for socket in list(self.listeners):
            try:
                await socket.tell_stats_interval(interval)
            except Exception:  # that socket's trouble (closing under us) is its own
                log.debug("telling a socket its stats interval failed", exc_info=True)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            try:
                await self.check()
            except Exception:
                log.exception("the stats interval check failed")


_rates: PerLoop[StatsRate] = PerLoop()


def stats_rate() -> StatsRate:
    return _rates.current(StatsRate)
