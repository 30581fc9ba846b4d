"""The in-memory channel layer for embedded mode (no REDIS_URL), with fan-out that stays linear.

Channels' InMemoryChannelLayer sweeps every channel's queue and every group membership for
expired entries at the start of each `receive` and `group_send`. Each consumer calls `receive`
again after handling a message, so one `group_send` to a network's N agent sockets costs N sweeps
of N channels: about a second of blocked event loop at N = 1,000 on this 2-core machine, during
which no socket writes anything (bench/controlplane_agents.py; BENCHMARKS.md "Control plane").

Here:
  * `receive` drops expired messages from the head of its own queue (exactly as the sweep would
    for that channel: the head is the oldest) and sweeps the other channels at most once per
    SWEEP_INTERVAL_S. Expiry is 60 s and group expiry a day, so a sweep up to one interval late
    changes nothing a consumer can see: an expired message is never delivered.
  * `group_send` puts the message on each member's queue directly instead of creating one task per
    member; a full queue drops the message for that member, as before.
  * `send` and `receive` build a queue only for a channel that has none (the parent builds one per
    call and throws it away: a thousand queues and events per fan-out, garbage to collect).
Everything else (channel names, capacity, deep copies, groups) is the parent's.
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

__all__ = ["SWEEP_INTERVAL_S", "LocalChannelLayer"]

SWEEP_INTERVAL_S = 1.0


class LocalChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._swept_at = float("-inf")

    def _sweep_due(self) -> None:
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_INTERVAL_S:
            self._swept_at = now
            self._clean_expired()  # type: ignore[attr-defined]  # InMemoryChannelLayer's, not in its stubs

    def _drop_expired_head(self, channel: str) -> None:
        queue = self.channels.get(channel)
        if queue is None:
            return
        # asyncio.Queue keeps its items in _queue (a deque); the head's expiry is read in place
        while not queue.empty() and queue._queue[0][0] < time.time():  # type: ignore[attr-defined]
            queue.get_nowait()
            self._remove_from_groups(channel)  # type: ignore[attr-defined]  # InMemoryChannelLayer's
        if queue.empty() and self.channels.get(channel) is queue:
            del self.channels[channel]

    def _queue(self, channel: str) -> asyncio.Queue:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._drop_expired_head(channel)
        self._sweep_due()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty() and self.channels.get(channel) is queue:
                del self.channels[channel]
        return message

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._sweep_due()
        for channel in list(self.groups.get(group, {})):
            try:
                await self.send(channel, message)  # no await inside: a plain put_nowait
            except ChannelFull:
                pass
