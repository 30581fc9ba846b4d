"""Gauges read at scrape time from the state every server process shares, so they are the same
whichever process is scraped and never need adding up across processes.

    shadowmesh_agents_online{network}       nodes with at least one authenticated agent socket
    shadowmesh_agent_websockets{network}    authenticated agent sockets open, on all processes
    shadowmesh_nodes{network,status}        enrolled nodes by status (active, revoked)
    shadowmesh_celery_queue_length{queue}   tasks waiting in the Celery broker (Redis only)
    shadowmesh_metrics_source_up{source}    1 when the database (or Redis) answered this scrape

Presence (meshadmin/telemetry/presence.py) counts sockets per node across processes; a process
that died without closing its sockets is swept within 30 s by `sweep_presence` (beat). On the
embedded default there is no broker: Celery tasks run in the process that queues them, nothing
waits, and `shadowmesh_celery_queue_length` is not exported at all (rather than a constant 0).
A source that fails is logged and its families are left out of that scrape; `_source_up` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Q, Sum
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

__all__ = ["CELERY_QUEUE", "CELERY_QUEUE_METRIC", "StateCollector"]

log = logging.getLogger(__name__)

CELERY_QUEUE = "celery"  # the default queue; settings route no task elsewhere
CELERY_QUEUE_METRIC = "shadowmesh_celery_queue_length"
# kombu's Redis transport keeps a queue's priorities 3, 6 and 9 in lists of their own
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def _database() -> list[Metric]:
    from meshadmin.mesh.models import Network

    online = GaugeMetricFamily("shadowmesh_agents_online",
                               "Nodes with at least one authenticated agent websocket.", labels=["network"])
    sockets = GaugeMetricFamily("shadowmesh_agent_websockets",
                                "Authenticated agent websockets open, on every server process.",
                                labels=["network"])
    nodes = GaugeMetricFamily("shadowmesh_nodes", "Enrolled nodes, by status.", labels=["network", "status"])
    rows = Network.objects.annotate(
        online=Count("nodes", filter=Q(nodes__presence__online=True)),
        sockets=Sum("nodes__presence__connections", filter=Q(nodes__presence__online=True)),
        active=Count("nodes", filter=Q(nodes__status="active")),
        revoked=Count("nodes", filter=Q(nodes__status="revoked")),
    ).values_list("name", "online", "sockets", "active", "revoked").order_by("name")
    for name, n_online, n_sockets, active, revoked in rows:
        online.add_metric([name], n_online)
        sockets.add_metric([name], n_sockets or 0)
        nodes.add_metric([name, "active"], active)
        nodes.add_metric([name, "revoked"], revoked)
    return [online, sockets, nodes]


_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        import redis

        url = settings.REDIS_URL
        if not url:
            raise RuntimeError("no REDIS_URL: the embedded default has no broker to read")
        _redis_client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _redis_client


def _celery_queue() -> list[Metric]:
    client = _redis()
    keys = [CELERY_QUEUE, *(f"{CELERY_QUEUE}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    waiting = sum(int(n) for n in pipe.execute())
    queue = GaugeMetricFamily(CELERY_QUEUE_METRIC,
                              "Celery tasks waiting in the Redis broker.", labels=["queue"])
    queue.add_metric([CELERY_QUEUE], waiting)
    return [queue]


class StateCollector:
    """A prometheus-client collector; `collect` runs in a thread that may use the database."""

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration (the database may not be there yet)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("shadowmesh_metrics_source_up",
                               "1 when the source answered this scrape (database; redis with REDIS_URL).",
                               labels=["source"])
        sources = [("database", _database)]
        if settings.REDIS_URL:
            sources.append(("redis", _celery_queue))
        for source, read in sources:
            try:
                fams = read()
            except Exception as exc:
                log.warning("metrics: reading %s failed: %s: %s", source, type(exc).__name__, exc,
                            extra={"event": "metrics.source_failed", "reason": type(exc).__name__})
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from fams
        yield up
