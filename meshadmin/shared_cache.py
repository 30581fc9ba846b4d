"""One cache client per process, shared by every thread and async task.

`django.core.cache.cache` is a proxy to a client kept per async context (asgiref's Local): an HTTP
request's client is closed when the request ends, but a websocket consumer lives as long as its
socket, so each agent socket that touches the cache (the connect-rate counter of every login, a
change it announces) got a client of its own, and with Redis (`REDIS_URL`) a Redis connection held
open for the socket's whole life: 10,000 agent sockets were 10,000 Redis clients, Redis's default
`maxclients`, after which logins stalled. The code on those paths uses `shared_cache()` instead:
one client per process (its connection pool is thread-safe), rebuilt when the CACHES setting
changes (tests)."""

from __future__ import annotations

import threading

from django.core.cache import DEFAULT_CACHE_ALIAS, BaseCache, caches
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["shared_cache"]

_lock = threading.Lock()
_client: BaseCache | None = None


def shared_cache() -> BaseCache:
    """The process's one client of the default cache."""
    global _client
    client = _client
    if client is None:
        with _lock:
            if _client is None:
                _client = caches.create_connection(DEFAULT_CACHE_ALIAS)
            client = _client
    return client


@receiver(setting_changed)
def _forget(setting: str, **kwargs: object) -> None:
    global _client
    if setting == "CACHES":
        with _lock:
            _client = None
