"""Fixed-window counters in the Django cache (Redis when REDIS_URL is set, so every server process
shares them), for the limits of settings.SHADOWMESH_RATE_LIMITS.

A limit is a number of events per window for one key. The key says what is limited: a client
address (meshadmin.client_address: the TCP peer, or the client behind a trusted proxy), a client
address and a peer id, a node. A limit of 0, or a scope absent from the settings, is unlimited.
"""

from __future__ import annotations

import time

from django.conf import settings

from meshadmin.metrics import events
from meshadmin.shared_cache import shared_cache

from .errors import RateLimited

__all__ = ["RateLimited", "check_rate", "exceeded", "hit", "hit_count", "limit_of"]

WINDOW_S = 60
KEY_PREFIX = "ratelimit"
clock = time.time  # which window "now" is in (tests hold it still)


def limit_of(scope: str) -> int:
    return int(settings.SHADOWMESH_RATE_LIMITS.get(scope, 0))  # absent = unlimited


def _cache_key(scope: str, key: str | None, window_s: int) -> str:
    window = int(clock()) // window_s
    return f"{KEY_PREFIX}:{scope}:{key or 'unknown'}:{window_s}:{window}"


def hit_count(scope: str, key: str | None, *, window_s: int = WINDOW_S) -> int:
    """Count one event for `key` in `scope`; the window's count so far (0 when unlimited)."""
    if limit_of(scope) <= 0:
        return 0
    cache = shared_cache()  # not django.core.cache.cache: one Redis client per socket (shared_cache.py)
    cache_key = _cache_key(scope, key, window_s)
    cache.add(cache_key, 0, timeout=window_s * 2)
    try:
        count = cache.incr(cache_key)
    except ValueError:  # evicted between add and incr
        cache.add(cache_key, 1, timeout=window_s * 2)
        count = 1
    if count > limit_of(scope):
        events.rate_limited(scope)
    return count


def hit(scope: str, key: str | None, *, window_s: int = WINDOW_S) -> bool:
    """Count one event for `key` in `scope`; False once the window's count is over the limit."""
    return hit_count(scope, key, window_s=window_s) <= limit_of(scope)


def exceeded(scope: str, key: str | None, *, window_s: int = WINDOW_S) -> bool:
    """Whether `key` has used up this window's budget, without counting anything."""
    limit = limit_of(scope)
    over = limit > 0 and (shared_cache().get(_cache_key(scope, key, window_s)) or 0) >= limit
    if over:
        events.rate_limited(scope)
    return over


def check_rate(scope: str, key: str | None, *, window_s: int = WINDOW_S,
               what: str = "from this address") -> None:
    """`hit`, raising RateLimited (429) when over the limit."""
    if not hit(scope, key, window_s=window_s):
        wait = "a minute" if window_s <= 60 else f"{window_s // 60} minutes"
        raise RateLimited(f"too many {scope} requests {what}; try again in {wait}", retry_after=window_s)
