"""Fixed-window counters in the Django cache (Redis when REDIS_URL is set, so every server process
shares them), for the limits of settings.SHADOWMESH_RATE_LIMITS.

A limit is a number of events per window for one key. The key says what is limited: a client
address (meshadmin.client_address: the TCP peer, or the client behind a trusted proxy), a client
address and a peer id, a node. A limit of 0, or a scope absent from the settings, is unlimited.

`hit` and its kin count every event, the refused ones too. `charge` counts only what it lets
through, and remembers where it counted it, so that `refund` can take it back later: the agent
websocket charges each new socket to its address and refunds the ones that log in
(realtime/consumers.py), so the budget bounds the failed and unfinished logins, not the honest ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache
from django.core.cache.backends.redis import RedisCache

from meshadmin.metrics import events
from meshadmin.shared_cache import shared_cache

from .errors import RateLimited

__all__ = ["Charge", "RateLimited", "charge", "check_rate", "exceeded", "hit", "hit_count", "limit_of",
           "refund"]

WINDOW_S = 60
KEY_PREFIX = "ratelimit"
clock = time.time  # which window "now" is in (tests hold it still)


def limit_of(scope: str) -> int:
    return int(settings.SHADOWMESH_RATE_LIMITS.get(scope, 0))  # absent = unlimited


def _cache_key(scope: str, key: str | None, window_s: int, window: int | None = None) -> str:
    if window is None:
        window = int(clock()) // window_s
    return f"{KEY_PREFIX}:{scope}:{key or 'unknown'}:{window_s}:{window}"


def _incr(cache_key: str, window_s: int) -> int:
    cache = shared_cache()  # not django.core.cache.cache: one Redis client per socket (shared_cache.py)
    cache.add(cache_key, 0, timeout=window_s * 2)
    try:
        return cache.incr(cache_key)
    except ValueError:  # evicted between add and incr
        cache.add(cache_key, 1, timeout=window_s * 2)
        return 1


def hit_count(scope: str, key: str | None, *, window_s: int = WINDOW_S) -> int:
    """Count one event for `key` in `scope`; the window's count so far (0 when unlimited)."""
    if limit_of(scope) <= 0:
        return 0
    count = _incr(_cache_key(scope, key, window_s), window_s)
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


@dataclass(frozen=True, slots=True)
class Charge:
    """What `charge` did. `admitted`: within the budget, and counted in the window of `cache_key`
    (None when the scope is unlimited: nothing was counted), which ends at `window_ends_at`.
    Refused: nothing counted, and `first_refusal` says whether it is the window's first refusal
    for this key (what the caller audits, once a window)."""

    admitted: bool
    cache_key: str | None = None
    window_ends_at: float = 0.0
    first_refusal: bool = False


def charge(scope: str, key: str | None, *, window_s: int = WINDOW_S) -> Charge:
    """Count one event for `key` in `scope` if the window's budget has room for it; over the
    budget nothing is counted (with Redis: one round trip counts, a second takes a refused one
    back; elsewhere a read comes first), and the first refusal of the window leaves a marker. No
    cache work at all when the scope is unlimited."""
    limit = limit_of(scope)
    if limit <= 0:
        return Charge(admitted=True)
    window = int(clock()) // window_s
    cache_key = _cache_key(scope, key, window_s, window)
    cache = shared_cache()
    redis = _redis_of(cache)
    if redis is not None:  # one round trip to count, a second only to take back a refused one
        raw = cache.make_and_validate_key(cache_key)
        if int(redis.eval(_INCR_WITH_TTL, 1, raw, window_s * 2)) <= limit:
            return Charge(admitted=True, cache_key=cache_key, window_ends_at=(window + 1) * window_s)
        redis.decr(raw)  # over the budget: not counted (it exists: it was just incremented)
    elif (cache.get(cache_key) or 0) < limit:
        if _incr(cache_key, window_s) <= limit:
            return Charge(admitted=True, cache_key=cache_key, window_ends_at=(window + 1) * window_s)
        _decr(cache_key)  # another one took the last of the budget meanwhile
    events.rate_limited(scope)
    first = cache.add(f"{cache_key}:refused", 1, timeout=window_s * 2)
    return Charge(admitted=False, first_refusal=bool(first))


def refund(spent: Charge) -> None:
    """Take back what `charge` counted, from the window it was counted in: not from the window of
    now, or an event of a window gone by would hand out budget in the new one. Once its window is
    over, its count limits nothing any more, and nothing is done (no write to a key about to expire)."""
    if spent.cache_key is None or clock() >= spent.window_ends_at:
        return
    _decr(spent.cache_key)


def _decr(cache_key: str) -> None:
    cache = shared_cache()
    redis = _redis_of(cache)
    if redis is not None:  # one round trip; a key gone (evicted) is not brought back at -1
        redis.eval(_DECR_IF_EXISTS, 1, cache.make_and_validate_key(cache_key))
        return
    try:
        cache.decr(cache_key)
    except ValueError:  # evicted: the count it was in is gone already
        pass


# Lua, run by Redis as one command: a new counter gets its time to live (as Django's `add` gives it)
_INCR_WITH_TTL = ("local n = redis.call('incr', KEYS[1]) "
                  "if n == 1 then redis.call('expire', KEYS[1], ARGV[1]) end return n")
_DECR_IF_EXISTS = ("if redis.call('exists', KEYS[1]) == 1 then return redis.call('decr', KEYS[1]) end "
                   "return nil")


def _redis_of(cache: BaseCache) -> Any | None:
    """The redis-py client behind Django's Redis cache, for commands in one round trip (Django's
    own incr and decr are two each: an EXISTS first); None for any other cache. The counters stay
    plain integers, which Django's Redis cache reads and writes as such."""
    if isinstance(cache, RedisCache):
        return cache._cache.get_client(write=True)  # Django's RedisCacheClient
    return None
