"""One channel per server process for the agent sockets: events reach a process once, not once per socket.

Each agent socket used to have its own channel and join `agents.<network>` and `node.<peer id>`
with it, so a network's change was one channel-layer message per socket, received by each
consumer's own pending `receive` (with Redis: a buffer, two tasks and a lock waiter per socket,
always). Here the process (its event loop) has one channel, `ProcessFanout.channel`. It is in a
group while at least one of the process's sockets is (`add` / `discard`), one task (`_pump`)
receives on it, and each event is handed to the process's own sockets of that group, in
process: no channel-layer work per socket. Senders do not change: they `group_send` to the same
group names (groups.py), and anything else in a group (a test's channel, a second process) gets
the event as before.

Which group an event came through is read from the event itself (a channel-layer message does not
carry its group): `netmap.changed` names its `network` (-> agents.<network>), `agent.revoke` its
`peer_id` (-> node.<peer id>). An event without them is logged and dropped. Two kinds are for the
process, not its sockets: `netmap.prefetch` (below) and `telemetry.watch` (given to `on_watch`:
stats_rate.py's leases).

Membership in the layer follows the local sockets: the first socket of a group makes the process
join it, the last one to leave makes it leave; joins and leaves of one group are done one at a time
by one task that repeats until the layer matches the sockets (a socket that joins while the last
one's leave is under way still ends with the process in the group). A socket's `add` returns once
the process is in the group, so an event sent after that reaches it. Memberships are renewed every
RENEW_S (groups expire in the layer after a day).

Handing an event to a socket is one task per socket, started eagerly (Python 3.12's eager tasks):
a socket whose handling does not wait (the common case: its map lock free, the view cached, the
frame written to its transport) is done before the next one starts, without a trip through the
event loop's queue; one that must wait goes on as an ordinary task. The sockets are handed the
event DELIVER_CHUNK at a time, one group per round of the loop, so that a network of thousands of
sockets does not hold the loop (and the process's HTTP requests) for the whole fan-out. So that
the common case is the only case after a change, a process given a `prepare` (consumers.py: load
the network's new view into the process's cache) awaits it once per event, in a task of the
event's own, before handing the event to the sockets; without it each socket would wait for that
load itself. A `netmap.prefetch` (sent when a change's push must wait, tasks.py) runs `prepare`
alone, while the push waits out its debounce: by the time `netmap.changed` comes, the view is
usually loaded.

Delivery through a channel layer is at most once (a full channel drops, Redis can be down). A
socket that misses a `netmap.changed` must not stay on an old map: every RECONCILE_S the process
reads the serial of each network it has sockets of (one query) and hands a `netmap.changed` to
each socket whose map is older than the serial read at the previous sweep (so a push that is
merely on its way, debounced, is not overtaken). Nothing is sent to a socket that is current.
When the layer fails (Redis stopped), the sockets keep their websockets (they do not use the
layer to receive); the process waits until the layer takes its groups again (a restarted Redis
has lost them) and then catches up every socket behind its network's current serial at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from . import groups
from .per_loop import PerLoop

__all__ = [
    "DELIVER_CHUNK",
    "LAYER_OPS",
    "RECONCILE_S",
    "RENEW_S",
    "Member",
    "ProcessFanout",
    "group_of",
    "process_fanout",
]

log = logging.getLogger(__name__)

RECONCILE_S = 30.0  # SHADOWMESH_NETMAP_RECONCILE_S: how often sockets behind the serial are caught up
RENEW_S = 3600.0  # memberships are renewed this often (the layer expires them after a day)
# joins and leaves in flight at once, per process: each takes a connection of the layer's pool
# (settings.REDIS_LAYER_MAX_CONNECTIONS), and thousands of sockets closing at once (a network
# outage, the agents' side restarting) leave thousands of node groups together
LAYER_OPS = 64
# sockets handed an event per round of the event loop (ProcessFanout._hand): about 10-30 ms of
# work under load, after which whatever else is ready (HTTP requests, agents' frames) runs
DELIVER_CHUNK = 64


class Member(Protocol):
    """What the fan-out needs of a socket (AgentConsumer)."""

    def fanout_deliver(self, event: dict) -> Coroutine[Any, Any, None]: ...

    def fanout_serial(self) -> int | None: ...  # the serial of the map it last sent, None before any


def reconcile_seconds() -> float:
    return float(getattr(settings, "SHADOWMESH_NETMAP_RECONCILE_S", RECONCILE_S))


def group_of(event: dict) -> str | None:
    """The group an event was sent to, read from the event (see the module's docstring)."""
    kind = event.get("type")
    if kind in (groups.NETMAP_CHANGED, groups.NETMAP_PREFETCH) and isinstance(event.get("network"), int):
        return groups.agents_group(event["network"])
    if kind == groups.AGENT_REVOKE and isinstance(event.get("peer_id"), str):
        return groups.node_group(event["peer_id"])
    return None


def _serials(network_ids: list[int]) -> dict[int, int]:
    from meshadmin.mesh.models import Network

    return dict(Network.objects.filter(pk__in=network_ids).values_list("pk", "serial"))


# one task per socket that runs at once until it first waits (None before Python 3.12: a task)
_eager_task = getattr(asyncio, "eager_task_factory", None)


class ProcessFanout:
    def __init__(self, layer=None, *,
                 read_serials: Callable[[list[int]], Awaitable[dict[int, int]]] | None = None,
                 reconcile_s: float | None = None,
                 prepare: Callable[[dict], Awaitable[None]] | None = None,
                 on_watch: Callable[[dict], None] | None = None) -> None:
        layer = layer if layer is not None else get_channel_layer()
        assert layer is not None  # settings.CHANNEL_LAYERS always names one
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, set[Member]] = {}
        self.joined: set[str] = set()  # groups the layer has our channel in
        self._syncs: dict[str, asyncio.Task] = {}
        self._layer_ops = asyncio.Semaphore(LAYER_OPS)
        self._delivering: set[asyncio.Task] = set()
        self._pump_task: asyncio.Task | None = None
        self._sweep_task: asyncio.Task | None = None
        self._read_serials = read_serials or database_sync_to_async(_serials)
        self._reconcile_s = reconcile_s
        self._prepare = prepare
        self._on_watch = on_watch  # telemetry.watch: the process's (stats_rate.py), not the sockets'
        self._seen: dict[int, int] = {}  # network -> the serial read at the previous sweep
        self._renewed_at = time.monotonic()
        self.received = 0  # events received from the layer (tests, benchmarks)
        self.caught_up = 0  # sockets handed a netmap.changed by the sweep
        self.recoveries = 0  # times the layer failed and came back

    # ------------------------------------------------------------------ membership

    async def add(self, group: str, member: Member) -> None:
        """`member` gets the group's events from now on (once this returns)."""
        if self.channel is None:
            self.channel = await self.layer.new_channel()
        self.members.setdefault(group, set()).add(member)
        self._start()
        while group in self.members and member in self.members[group] and group not in self.joined:
            await asyncio.shield(self._sync(group))

    async def discard(self, group: str, member: Member) -> None:
        held = self.members.get(group)
        if held is None or member not in held:
            return
        held.discard(member)
        if not held:
            del self.members[group]
            await asyncio.shield(self._sync(group))
        if not self.members:
            self._stop()

    def forget(self, member: Member) -> None:
        """Drop `member` from every group at once, without waiting for the layer (a consumer that
        is being cancelled cannot wait); the process leaves the groups it emptied in the background."""
        for group in [g for g, held in self.members.items() if member in held]:
            held = self.members[group]
            held.discard(member)
            if not held:
                del self.members[group]
                self._sync(group)
        if not self.members:
            self._stop()

    def _sync(self, group: str) -> asyncio.Task:
        task = self._syncs.get(group)
        if task is None or task.done():
            task = self._syncs[group] = asyncio.ensure_future(self._syncing(group))
        return task

    async def _syncing(self, group: str) -> None:
        """Join or leave `group` until the layer matches the sockets (they may change meanwhile)."""
        try:
            while (group in self.members) != (group in self.joined):
                assert self.channel is not None
                async with self._layer_ops:
                    if (group in self.members) == (group in self.joined):
                        break  # changed back while this waited for its turn
                    if group in self.members:
                        await self.layer.group_add(group, self.channel)
                        self.joined.add(group)
                    else:
                        await self.layer.group_discard(group, self.channel)
                        self.joined.discard(group)
        finally:
            if self._syncs.get(group) is asyncio.current_task():
                del self._syncs[group]

    # ------------------------------------------------------------------ delivery

    def _start(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.ensure_future(self._pump())
        if self._sweep_task is None or self._sweep_task.done():
            self._sweep_task = asyncio.ensure_future(self._sweep())

    def _stop(self) -> None:
        for task in (self._pump_task, self._sweep_task):
            if task is not None:
                task.cancel()
        self._pump_task = self._sweep_task = None

    async def _pump(self) -> None:
        assert self.channel is not None
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # the layer is down (Redis)
                log.exception("the process's agent channel cannot receive; waiting for the layer")
                await self._recover()
                continue
            self.received += 1
            kind = event.get("type")
            if self._prepare is not None and kind in (groups.NETMAP_CHANGED, groups.NETMAP_PREFETCH) \
                    and group_of(event) in self.members:
                deliver = kind == groups.NETMAP_CHANGED
                self._keep(asyncio.ensure_future(self._prepared(event, deliver)))
            elif kind == groups.TELEMETRY_WATCH:  # for this process, not its sockets
                if self._on_watch is not None:
                    try:
                        self._on_watch(event)
                    except Exception:  # a bad event must not end the pump
                        log.exception("handling %s failed", kind)
            elif kind != groups.NETMAP_PREFETCH:  # a prefetch is for this process, not its sockets
                self.deliver(event)

    async def _prepared(self, event: dict, deliver: bool) -> None:
        """`prepare` for `event`, then (not for a prefetch) the event handed to the sockets. A
        failed `prepare` is logged: each socket then does the work itself, and fails or not on
        its own."""
        assert self._prepare is not None
        try:
            await self._prepare(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("preparing %s for the agent sockets failed", event.get("type"))
        if deliver:
            self.deliver(event)

    def _keep(self, task: asyncio.Task) -> None:
        if not task.done():
            self._delivering.add(task)  # referenced until done (the loop holds tasks weakly)
            task.add_done_callback(self._delivering.discard)

    async def _recover(self) -> None:
        """After the layer failed: wait until it takes our groups again (a Redis that restarted
        has lost them all; the sockets kept their websockets), then catch up every socket behind
        its network's current serial at once (the pushes sent meanwhile are lost)."""
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            try:
                assert self.channel is not None
                for group in list(self.joined):
                    await self.layer.group_add(group, self.channel)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = min(2 * delay, 5.0)
        self.recoveries += 1
        log.warning("the process's agent channel is back (%d groups joined again); catching up",
                    len(self.joined), extra={"event": "realtime.layer_back"})
        try:
            await self.reconcile(at_once=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("catching up agent sockets after the layer came back failed; the sweep will")

    def deliver(self, event: dict, only: Iterable[Member] | None = None) -> int:
        """Hand `event` to the process's sockets of its group (or to `only` of them): one task each,
        started eagerly (the module's docstring), so a socket that waits (its own map being sent)
        holds up nobody else; DELIVER_CHUNK sockets per round of the event loop. Returns how many."""
        group = group_of(event)
        if group is None:
            log.warning("agent event %r names no network or peer: dropped", event.get("type"))
            return 0
        targets = list(self.members.get(group, ()) if only is None else only)
        self._hand(asyncio.get_running_loop(), event, targets, 0)
        return len(targets)

    def _hand(self, loop: asyncio.AbstractEventLoop, event: dict, targets: list[Member], start: int) -> None:
        """`event` to targets[start:start + DELIVER_CHUNK], the rest in a later round of the loop:
        a socket handled eagerly does not yield, so a thousand of them in one go would hold the
        loop for the whole fan-out, and with it the process's HTTP requests (a change's own
        enrollment among them: each crosses the loop several times) and the other sockets' input."""
        end = start + DELIVER_CHUNK
        for member in targets[start:end]:
            coro = member.fanout_deliver(dict(event))
            self._keep(_eager_task(loop, coro) if _eager_task is not None else loop.create_task(coro))
        if end < len(targets):
            loop.call_soon(self._hand, loop, event, targets, end)

    # ------------------------------------------------------------------ catching up what was missed

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._reconcile_s if self._reconcile_s is not None else reconcile_seconds())
            try:
                await self.reconcile()
                if time.monotonic() - self._renewed_at >= RENEW_S:
                    self._renewed_at = time.monotonic()
                    for group in list(self.joined):
                        if group in self.members and self.channel is not None:
                            await self.layer.group_add(group, self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("catching up agent sockets failed; trying again at the next sweep")

    async def reconcile(self, at_once: bool = False) -> int:
        """One sweep: sockets whose map is older than their network's serial at the previous sweep
        (`at_once`: than the current serial) get a netmap.changed at the current serial. Returns
        how many."""
        prefix = groups.agents_group(0)[:-1]
        networks = [int(g[len(prefix):]) for g in self.members if g.startswith(prefix)]
        if not networks:
            self._seen = {}
            return 0
        current = await self._read_serials(networks)
        handed = 0
        for network_id, serial in current.items():
            before = serial if at_once else self._seen.get(network_id)
            if before is None:
                continue
            behind = [m for m in self.members.get(groups.agents_group(network_id), ())
                      if (s := m.fanout_serial()) is not None and s < before]
            if behind:
                log.warning("network %s: %d socket(s) missed the push of serial %d; catching up",
                            network_id, len(behind), before,
                            extra={"event": "netmap.caught_up", "network": network_id})
                handed += self.deliver({"type": groups.NETMAP_CHANGED, "network": network_id,
                                        "serial": serial}, behind)
        self._seen = current
        self.caught_up += handed
        return handed


_fanouts: PerLoop[ProcessFanout] = PerLoop()


def process_fanout(prepare: Callable[[dict], Awaitable[None]] | None = None,
                   on_watch: Callable[[dict], None] | None = None) -> ProcessFanout:
    """This event loop's (this server process's) fan-out; `prepare` and `on_watch` are given to it
    when this call makes it (ProcessFanout's)."""
    return _fanouts.current(lambda: ProcessFanout(prepare=prepare, on_watch=on_watch))
