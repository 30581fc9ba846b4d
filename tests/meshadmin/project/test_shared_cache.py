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


def _clients_seen_by(step) -> set[int]:
    """The cache clients `step` (a sync function returning the client it used) sees when called
    as consumers call it: each from its own task, through sync_to_async."""

    async def consumer():
        return id(await sync_to_async(step, thread_sensitive=False)())

    async def many():
        return set(await asyncio.gather(*(consumer() for _ in range(SOCKETS))))

    # a server's loop runs in a context that has not touched the cache yet (a new thread starts
    # with an empty one): each consumer task then fills its own
    result: list[set[int]] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(many())))
    thread.start()
    thread.join()
    return result[0]


def test_djangos_cache_proxy_gives_every_consumer_its_own_client():
    # what the fix works around: the same step through django.core.cache.cache
    assert len(_clients_seen_by(lambda: per_context_cache._connections[per_context_cache._alias])) == SOCKETS


def test_the_rate_limit_counter_uses_one_client_for_every_consumer(settings, monkeypatch):
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "agent_connect": 1000}
    used: list[int] = []
    real = shared_cache

    def spy():
        client = real()
        used.append(id(client))
        return client

    monkeypatch.setattr(ratelimit, "shared_cache", spy)
    counts = _clients_seen_by(lambda: ratelimit.hit_count("agent_connect", "198.18.0.9"))
    assert len(counts) == SOCKETS  # each call counted (1..SOCKETS): they share one counter
    assert len(set(used)) == 1


def test_the_push_pending_key_goes_through_the_shared_client():
    assert tasks.shared_cache is shared_cache  # the name tasks.py calls


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
