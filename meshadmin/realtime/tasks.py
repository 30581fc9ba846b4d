"""Netmap pushes: after a committed change, once per burst, one event per network.

    change committed --(mesh.changes.change_announced)--> on_change_announced
        -> first change of a burst?  (cache.add of a per-network "pending" key)
             no  -> merged into the push already scheduled
             yes -> push_netmaps(network) after `push_delay`: at once when the network's last
                    push is DEBOUNCE_S or more ago (a lone change waits for nothing), else
                    when DEBOUNCE_S have passed since that push (so a burst is at most one
                    push per DEBOUNCE_S, the first of it at once, the rest merged into the next);
                    when it waits, at once (on a serving loop): group_send(agents.<network>,
                    netmap.prefetch {network, serial}): each process loads the view meanwhile
    push_netmaps: delete the pending key, note the time of the push (a per-network "pushed"
        key), read the network serial,
        group_send(agents.<network>, netmap.changed {network, serial, changed_at})
        (`changed_at`: when the burst's first change committed, kept in the pending key; each
        socket measures the push from it, push_latency.py)
    each AgentConsumer: the process's NetworkView at >= serial (loaded once per process, see
        netmap_cache.py) -> compute.netmap_for(itself) -> delta against what its socket last got -> send;
        a node that is no longer active (revoked, deleted) closes its own socket (4403)

The event is a few bytes whatever the network's size: each server process reads the snapshot
once and each socket computes only its own map, instead of one process computing N maps of N
peers and shipping them all through the channel layer.

Where the delayed push runs:
  * In a server process that serves agent sockets (its event loop was registered by an
    AgentConsumer): armed with call_later on that loop and sent through the process's channel
    layer. With the in-memory layer (embedded mode) this is the only way to reach the sockets;
    with Redis the groups span every Daphne process, so a change made through one server reaches
    agents connected to another.
  * Anywhere else (a Celery worker, a management command, a server process without agent
    sockets) with a broker (REDIS_URL): `push_netmaps.apply_async(countdown=<the delay>)`. The
    worker sends through a *fresh* channel layer per call and closes its Redis pools before its
    event loop ends (channels_redis keeps pools per loop; reusing the global layer from
    async_to_sync in a worker gives "Event loop is closed", django/channels_redis#332).
  * Without a broker and without a loop there is no socket in reach: nothing to do.
Each AgentConsumer turns the full map into a delta against what it last sent to its socket.
A change that affects no node (`node_ids` empty, e.g. a new token) pushes nothing; any other
change recomputes every node of the network (each socket then sends only its delta, if any).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time

from asgiref.sync import async_to_sync
from celery import shared_task
from channels.db import database_sync_to_async
from channels.layers import (  # type: ignore[attr-defined]  # DEFAULT_CHANNEL_LAYER is missing from the stubs
    DEFAULT_CHANNEL_LAYER,
    InMemoryChannelLayer,
    channel_layers,
    get_channel_layer,
)
from django.conf import settings

from meshadmin.mesh.changes import Change
from meshadmin.mesh.models import Network
from meshadmin.metrics import events
from meshadmin.shared_cache import shared_cache

from . import groups

__all__ = ["build_pushes", "debounce_seconds", "on_change_announced", "push_delay", "push_netmaps",
           "register_loop"]

log = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_S = 0.3
PENDING_TTL_S = 30  # a lost push (crashed worker) blocks later ones for at most this long

_loop: asyncio.AbstractEventLoop | None = None
_running: set[asyncio.Task] = set()  # keeps in-process pushes alive until done


def debounce_seconds() -> float:
    value = float(getattr(settings, "SHADOWMESH_NETMAP_DEBOUNCE_S", DEFAULT_DEBOUNCE_S))
    return min(max(value, 0.0), 0.5)  # the bound: bursts merge within <= 500 ms


KEY_PREFIX = "shadowmesh:netmap-push-pending"
PUSHED_PREFIX = "shadowmesh:netmap-pushed"


def pending_key(network_id: int) -> str:
    return f"{KEY_PREFIX}:{int(network_id)}"


def pushed_key(network_id: int) -> str:
    """When the network's last push was built (wall clock); kept PENDING_TTL_S, far longer than
    any debounce, so a missing key means a quiet network."""
    return f"{PUSHED_PREFIX}:{int(network_id)}"


def push_delay(now: float, last_push: object, debounce: float) -> float:
    """How long the first change of a burst waits before its push: none when the network's last
    push (`last_push`, wall clock, None if unknown) is `debounce` or more ago; otherwise until
    `debounce` after that push. Never more than `debounce` (a clock step backwards cannot hold a
    push longer)."""
    if not isinstance(last_push, (int, float)) or isinstance(last_push, bool):
        return 0.0
    return min(debounce, max(0.0, float(last_push) + debounce - now))


def register_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Called by AgentConsumer.connect: the loop that serves this process's agent sockets."""
    global _loop
    _loop = loop


def _broker_mode() -> bool:
    return not getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)


def on_change_announced(sender, change: Change, **kwargs) -> None:
    """Receiver of mesh.changes.change_announced (runs after commit; must be quick)."""
    if change.node_ids is not None and not change.node_ids:
        return  # nothing any node must know changed
    cache = shared_cache()
    now = time.time()
    if not cache.add(pending_key(change.network_id), now, timeout=PENDING_TTL_S):
        return  # merged into the push already scheduled for this network
    delay = push_delay(now, cache.get(pushed_key(change.network_id)), debounce_seconds())
    loop = _loop
    if loop is None or loop.is_closed() or not loop.is_running():
        if _broker_mode():
            try:
                push_netmaps.apply_async((change.network_id,), countdown=delay)
                return
            except Exception:
                log.exception("cannot queue the netmap push for network %s", change.network_id)
        shared_cache().delete(pending_key(change.network_id))
        return
    # A fresh context: the caller's (a sync_to_async worker's) must not leak into the push, or
    # asgiref sees its own executor "in use" and refuses database_sync_to_async (deadlock guard).
    loop.call_soon_threadsafe(_arm, loop, change.network_id, delay, change.serial or None,
                              context=contextvars.Context())


def _arm(loop: asyncio.AbstractEventLoop, network_id: int, delay: float, serial: int | None = None) -> None:
    if delay <= 0:
        _start(loop, network_id)  # nothing to wait for: the push loads the view itself
        return
    loop.call_later(delay, _start, loop, network_id, context=contextvars.Context())
    if serial is not None:
        _track(loop.create_task(_prefetch(network_id, serial), context=contextvars.Context()))


async def _prefetch(network_id: int, serial: int) -> None:
    """Tell the network's server processes to load the view at `serial` now, while the push waits
    out its debounce (fanout.py); a lost prefetch costs only the time it would have saved."""
    layer = get_channel_layer()
    assert layer is not None  # settings.CHANNEL_LAYERS always names one
    try:
        await layer.group_send(groups.agents_group(network_id), {
            "type": groups.NETMAP_PREFETCH, "network": int(network_id), "serial": int(serial)})
    except Exception as exc:
        log.warning("netmap prefetch for network %s not sent: %s: %s", network_id, type(exc).__name__, exc)


def _track(task: asyncio.Task) -> None:
    _running.add(task)
    task.add_done_callback(_running.discard)


def _start(loop: asyncio.AbstractEventLoop, network_id: int) -> None:
    _track(loop.create_task(apush_netmaps(network_id), context=contextvars.Context()))


def build_pushes(network_id: int) -> list[tuple[str, dict]]:
    """The (group, event) pairs that tell a network's agent sockets to catch up."""
    cache = shared_cache()  # not django.core.cache.cache (shared_cache.py)
    changed_at = cache.get(pending_key(network_id))
    # before reading: a later commit schedules a new push, DEBOUNCE_S after this one at the soonest
    cache.set(pushed_key(network_id), time.time(), timeout=PENDING_TTL_S)
    cache.delete(pending_key(network_id))
    serial = Network.objects.filter(pk=network_id).values_list("serial", flat=True).first()
    if serial is None:
        return []
    event = {"type": groups.NETMAP_CHANGED, "network": int(network_id), "serial": int(serial)}
    if isinstance(changed_at, (int, float)):
        event["changed_at"] = float(changed_at)
    return [(groups.agents_group(network_id), event)]


async def apush_netmaps(network_id: int) -> int:
    """In-process push on the serving loop (embedded mode)."""
    try:
        pushes = await database_sync_to_async(build_pushes)(network_id)
        layer = get_channel_layer()
        assert layer is not None  # settings.CHANNEL_LAYERS always names one
        for group, event in pushes:
            await layer.group_send(group, event)
        events.netmap_pushed(len(pushes))
        log.info("network %s: netmap change announced to %d group(s)", network_id, len(pushes),
                 extra={"event": "netmap.pushed", "network": network_id})
        return len(pushes)
    except Exception:
        log.exception("netmap push for network %s failed", network_id)
        return 0


async def _send_with_fresh_layer(pushes: list[tuple[str, dict]]) -> None:
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    try:
        for group, event in pushes:
            await layer.group_send(group, event)
    finally:
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()


def send_to_groups(pushes: list[tuple[str, dict]]) -> None:
    """group_send from synchronous code (Celery worker, management command)."""
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        async_to_sync(_send_in_memory)(pushes)
    else:
        async_to_sync(_send_with_fresh_layer)(pushes)


async def _send_in_memory(pushes: list[tuple[str, dict]]) -> None:
    layer = get_channel_layer()
    assert layer is not None  # settings.CHANNEL_LAYERS always names one
    for group, event in pushes:
        await layer.group_send(group, event)


@shared_task(name="meshadmin.realtime.tasks.push_netmaps", ignore_result=True)
def push_netmaps(network_id: int) -> int:
    pushes = build_pushes(network_id)
    send_to_groups(pushes)
    events.netmap_pushed(len(pushes))
    log.info("pushed netmaps for network %s to %d groups", network_id, len(pushes),
             extra={"event": "netmap.pushed", "network": network_id})
    return len(pushes)
