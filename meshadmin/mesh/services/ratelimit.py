"""Fixed-window request limits per client address, kept in the Django cache (Redis when
REDIS_URL is set, so every web process shares the counters).

The key is REMOTE_ADDR as the ASGI server saw it; X-Forwarded-For is ignored, so a client
cannot pick its own bucket. Behind a proxy, the proxy must limit too (or set REMOTE_ADDR).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from meshadmin.mesh.services.errors import ServiceError

__all__ = ["RateLimited", "check_rate"]

WINDOW_S = 60


class RateLimited(ServiceError):
    status = 429


def check_rate(scope: str, client_ip: str | None) -> None:
    limit = settings.SHADOWMESH_RATE_LIMITS.get(scope, 0)  # absent = unlimited
    if limit <= 0:
        return
    window = int(time.time()) // WINDOW_S
    key = f"ratelimit:{scope}:{client_ip or 'unknown'}:{window}"
    cache.add(key, 0, timeout=WINDOW_S * 2)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.add(key, 1, timeout=WINDOW_S * 2)
        count = 1
    if count > limit:
        raise RateLimited(f"too many {scope} requests from this address; try again in a minute")
