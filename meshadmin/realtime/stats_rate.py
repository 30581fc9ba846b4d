"""How often this server process asks its agents for their counters (`telemetry` messages).

An agent reports its counters every 2 s unless the server says otherwise. Each report is a frame
the server reads, decodes and stores; at 10,000 agents on two processes that is 2,500 frames a
second per process, on the event loop that also hands out netmap changes (measured: a change
reached the last of 10,000 agents in 6.6 s p99 with the reports against 2.5 s without them). So
each process keeps the reports of its agent sockets within a budget, SHADOWMESH_AGENT_STATS_BUDGET
reports per second (250 by default; 0: no budget): the interval it asks for is its number of
agent sockets divided by the budget, at least FLOOR_S (the agent's own 2 s: a process with up to
500 sockets asks for nothing else) and at most CEILING_S (presence.STALE_AFTER counts on it).

Watched networks. Someone looking at a network's live traffic (a dashboard page of that network,
dashboard/consumers.py) wants its samples every 2 s, not every 20. The page's socket sends
`telemetry.watch {network, seconds}` to the network's agent group every WATCH_RENEW_S while it is
open; each process serving agents of that network takes it as a lease of `seconds` (WATCH_S
at most). While a network is watched, its sockets share half the budget (2 s for up to 125 of
them per process by default; never a longer interval than without the watch) and the other
sockets the rest, but never less than the other half (`intervals_for`). A lease nobody renews
ends by itself: a closed tab costs at most WATCH_S.

A socket whose agent named the feature in `auth` is told its interval after its first map. The
process checks every CHECK_S (and at once when a lease starts) whether the interval each socket
should have moved by a factor of RETELL or more from the one it was last told (a restart fills a
process with thousands of sockets within a minute, and the first ones heard the floor; a lease
starts or ends) and, if so, tells that socket. Agents that do not take `telemetry` keep their own
interval and still count toward the budget.

The policy is two functions of a few numbers (`interval_for`, `intervals_for`); `StatsRate` keeps
the count and leases of one process; sending is the socket's (AgentConsumer.tell_stats_interval).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

from django.conf import settings

from .per_loop import PerLoop

__all__ = ["CEILING_S", "CHECK_S", "DEFAULT_BUDGET", "FLOOR_S", "RETELL", "WATCH_RENEW_S", "WATCH_S",
           "StatsRate", "interval_for", "intervals_for", "stats_rate"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 250  # reports per second per server process (SHADOWMESH_AGENT_STATS_BUDGET)
FLOOR_S = 2.0  # the agent's own interval (nodeagent.server_link.STATS_INTERVAL_S)
CEILING_S = 30.0
CHECK_S = 10.0
RETELL = 1.5
WATCH_S = 60.0  # the longest lease a watch takes
WATCH_RENEW_S = 20.0  # how often an open dashboard page renews its watch


class Listener(Protocol):
    """What the bookkeeping needs of a socket whose agent takes `telemetry` (AgentConsumer)."""

    told_interval: float | None  # the interval it last told its agent (set before it sends)

    def tell_stats_interval(self, interval_s: float) -> Coroutine[Any, Any, None]: ...


def interval_for(sockets: int, budget: float) -> float:
    """The interval that keeps `sockets` agents' reports within `budget` per second, bounded by
    FLOOR_S and CEILING_S, to a tenth of a second (a budget of 0 or less: no budget, FLOOR_S)."""
    if budget <= 0:
        return FLOOR_S
    return round(min(CEILING_S, max(FLOOR_S, sockets / budget)), 1)


def intervals_for(watched: int, others: int, budget: float) -> tuple[float, float]:
    """(interval of the watched networks' sockets, interval of the others): with nothing watched,
    the others have the whole budget; else the watched get half of it at most and the others what
    the watched leave, half of it at least. A watch never makes anyone's interval longer for the
    watched, nor shorter for the others, than without it."""
    if watched <= 0:
        return FLOOR_S, interval_for(others, budget)
    if budget <= 0:
        return FLOOR_S, FLOOR_S
    unwatched = interval_for(watched + others, budget)
    mine = min(interval_for(watched, budget / 2), unwatched)
    return mine, max(unwatched, interval_for(others, max(budget - watched / mine, budget / 2)))


def budget() -> float:
    return float(getattr(settings, "SHADOWMESH_AGENT_STATS_BUDGET", DEFAULT_BUDGET))


class StatsRate:
    """The agent sockets of one event loop (server process) and the leases on their networks."""

    def __init__(self, clock=None) -> None:
        self.sockets = 0  # every logged-in agent socket of the process
        self.per_network: collections.Counter[int] = collections.Counter()  # of them, per network
        # those that take `telemetry`, with their network
        self.listeners: weakref.WeakKeyDictionary[Listener, int] = weakref.WeakKeyDictionary()
        self.leases: dict[int, float] = {}  # network id -> clock time its watch ends
        self.retold = 0  # checks that told some listener a new interval
        self._clock = clock
        self._checker: asyncio.Task | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def watched(self) -> set[int]:
        now = self._now()
        for network in [n for n, until in self.leases.items() if until <= now]:
            del self.leases[network]
        return set(self.leases)

    def intervals(self) -> tuple[float, float, set[int]]:
        """(watched interval, others' interval, the watched networks) now."""
        watched = self.watched()
        in_watch = sum(self.per_network[n] for n in watched)
        mine, others = intervals_for(in_watch, self.sockets - in_watch, budget())
        return mine, others, watched

    def interval_of(self, network_id: int) -> float:
        mine, others, watched = self.intervals()
        return mine if network_id in watched else others

    def joined(self, socket: Listener | None, network_id: int) -> float:
        """A socket of `network_id` logged in (`socket`: itself if its agent takes `telemetry`,
        else None); returns the interval to tell it (the caller tells it)."""
        self.sockets += 1
        self.per_network[network_id] += 1
        interval = self.interval_of(network_id)
        if socket is not None:
            self.listeners[socket] = network_id
        if self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(self._check_forever())
        return interval

    def left(self, socket: Listener | None, network_id: int) -> None:
        self.sockets = max(0, self.sockets - 1)
        self.per_network[network_id] -= 1
        if self.per_network[network_id] <= 0:
            del self.per_network[network_id]
        if socket is not None:
            self.listeners.pop(socket, None)

    def watch(self, network_id: int, seconds: float) -> bool:
        """A dashboard watches `network_id` for `seconds` more (at most WATCH_S); True when the
        network was not watched before (the caller then checks at once)."""
        seconds = min(max(float(seconds), 0.0), WATCH_S)
        until = self._now() + seconds
        new = network_id not in self.watched()
        if until > self.leases.get(network_id, 0.0):
            self.leases[network_id] = until
        return new and seconds > 0

    def due(self) -> list[tuple[Listener, float]]:
        """The listeners to tell a new interval now, with it: those whose interval moved by RETELL
        or more from the one they were last told."""
        mine, others, watched = self.intervals()
        out = []
        for socket, network in list(self.listeners.items()):
            want = mine if network in watched else others
            had = socket.told_interval or FLOOR_S
            if want >= had * RETELL or want * RETELL <= had:
                out.append((socket, want))
        return out

    async def check(self) -> None:
        """Tell each listener whose interval moved far enough its new one (one socket after the
        other: a small frame each, nothing to wait for)."""
        due = self.due()
        if not due:
            return
        log.info("asking %d of %d agent sockets for counters at a new interval (%s; %d sockets, "
                 "%d networks watched)", len(due), len(self.listeners),
                 ", ".join(f"{v:.1f} s" for v in sorted({v for _, v in due})), self.sockets,
                 len(self.leases), extra={"event": "telemetry.interval"})
        self.retold += 1
        for socket, interval in due:
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
