"""The rate-limit counters and the push's pending key use one cache client per process
(meshadmin/shared_cache.py), not `django.core.cache.cache`, whose client is per async context: a
websocket consumer lives as long as its socket, so every agent socket held a client of its own, and
with Redis a connection (10,000 sockets reached Redis's maxclients and logins stalled)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache as per_context_cache

from meshadmin.mesh.services import ratelimit
from meshadmin.realtime import tasks
from meshadmin.shared_cache import shared_cache

SOCKETS = 20


def _from_consumers(step) -> list:
    """What `step` (a sync function) returns when called as consumers call it: SOCKETS times,
    each from its own task, through sync_to_async."""

    async def consumer():
        return await sync_to_async(step, thread_sensitive=False)()

    async def many():
        return list(await asyncio.gather(*(consumer() for _ in range(SOCKETS))))

    # a server's loop runs in a context that has not touched the cache yet (a new thread starts
    # with an empty one): each consumer task then fills its own
    result: list[list] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(many())))
    thread.start()
    thread.join()
    return result[0]


def test_djangos_cache_proxy_gives_every_consumer_its_own_client():
    # what the fix works around: the same step through django.core.cache.cache
    clients = _from_consumers(lambda: per_context_cache._connections[per_context_cache._alias])
    assert len({id(c) for c in clients}) == SOCKETS


def test_the_rate_limit_counter_uses_one_client_for_every_consumer(settings, monkeypatch):
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "agent_connect": 1000}
    used: list[int] = []
    real = shared_cache

    def spy():
        client = real()
        used.append(id(client))
        return client

    monkeypatch.setattr(ratelimit, "shared_cache", spy)
    counts = _from_consumers(lambda: ratelimit.hit_count("agent_connect", "198.18.0.9"))
    assert sorted(counts) == list(range(1, SOCKETS + 1))  # every call counted on one counter
    assert len(used) == SOCKETS and len(set(used)) == 1


def test_the_push_pending_key_uses_one_client_for_every_consumer(monkeypatch):
    """A change an agent socket makes (its endpoint, say) is announced from that socket's context:
    the pending key of the push goes through the one shared client."""
    from meshadmin.mesh.changes import Change

    used: list[object] = []
    real = shared_cache

    def spy():
        client = real()
        used.append(client)
        return client

    monkeypatch.setattr(tasks, "shared_cache", spy)
    monkeypatch.setattr(tasks, "_loop", None)  # no server loop here: the key is set, then dropped
    network = iter(range(1000, 1000 + SOCKETS))

    def announce():
        tasks.on_change_announced(None, Change(next(network), "peer.registered", None, 1))
        return used[-1]  # the client this announcement used

    assert len({id(c) for c in _from_consumers(announce)}) == 1
    assert len(used) >= SOCKETS  # every announcement went through it


def test_a_changed_caches_setting_gives_a_new_client(settings):
    before = shared_cache()
    assert shared_cache() is before
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": "another"}}
    assert shared_cache() is not before


@pytest.mark.postgres
def test_many_sockets_one_redis_connection(settings):
    """Against the real Redis of pass 2: the connect-rate counter of 50 consumers opens at most a few
    Redis connections in this process, not 50."""
    import os

    import redis

    url = os.environ["REDIS_URL"]
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "agent_connect": 1000}
    me = redis.Redis.from_url(url)
    before = len(me.client_list())

    async def consumer():
        await sync_to_async(ratelimit.hit_count, thread_sensitive=False)("agent_connect", "198.18.0.10")

    async def many():
        await asyncio.gather(*(consumer() for _ in range(50)))
        return len(me.client_list())

    during = asyncio.run(many())
    assert during - before <= 8, f"{during - before} new Redis connections for 50 consumers"
