"""Counter reports (and netmap acks) from the agent sockets of one process, stored together about
once a second.

Each socket hands its report to the buffer of its event loop; the first report of a round starts
a timer, and when it fires every buffered report is stored with telemetry.ingest.ingest_batch in
one transaction, then each resulting update (network and reporter, no figures: pages re-read
what they show) goes to its network's dashboard group.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from meshadmin.metrics import events
from meshadmin.telemetry import presence
from meshadmin.telemetry.ingest import Report, ingest_batch

from . import groups
from .per_loop import PerLoop

__all__ = ["StatsBuffer", "stats_buffer"]

log = logging.getLogger(__name__)

DEFAULT_FLUSH_S = 1.0


class StatsBuffer:
    def __init__(self) -> None:
        self.pending: list[Report] = []
        self.acks: dict[int, int] = {}  # node pk -> last acknowledged netmap serial
        self.flushing: asyncio.Task | None = None

    def add(self, report: Report) -> None:
        self.pending.append(report)
        self._arm()

    def ack(self, node_pk: int, serial: int) -> None:
        self.acks[node_pk] = max(serial, self.acks.get(node_pk, 0))
        self._arm()

    def _arm(self) -> None:
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(float(getattr(settings, "SHADOWMESH_TELEMETRY_FLUSH_S", DEFAULT_FLUSH_S)))
        batch, self.pending, self.flushing = self.pending, [], None
        acks, self.acks = self.acks, {}
        try:
            updates = await database_sync_to_async(_store)(batch, acks)
        except Exception:
            log.exception("storing %d counter reports failed; they are dropped", len(batch),
                          extra={"event": "telemetry.store_failed"})
            for _ in batch:
                events.report_dropped("store_failed")
            return
        layer = get_channel_layer()
        assert layer is not None  # settings.CHANNEL_LAYERS always names one
        try:
            for update in updates:
                await layer.group_send(groups.dashboard_group(update["network"]),
                                       {"type": groups.TELEMETRY_UPDATE, **update})
        except Exception as exc:  # the layer is down (Redis): reports are stored, pages miss an update
            log.warning("telemetry updates not announced to the dashboards: %s: %s", type(exc).__name__, exc,
                        extra={"event": "telemetry.announce_failed"})


def _store(batch: list[Report], acks: dict[int, int]) -> list[dict]:
    if acks:
        presence.acked_many(acks)
    return ingest_batch(batch)


_buffers: PerLoop[StatsBuffer] = PerLoop()


def stats_buffer() -> StatsBuffer:
    return _buffers.current(StatsBuffer)
