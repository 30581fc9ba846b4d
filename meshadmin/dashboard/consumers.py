"""DashboardConsumer: the browser's live socket (`/ws/dashboard/`).

Mounted behind AllowedHostsOriginValidator and the session AuthMiddlewareStack (routing.py), so
only a page from our own origin, with a logged-in session, gets here. A user who may not view the
dashboard, or whose session ends, gets close code 4401 and live.js sends the tab to login.

The socket only tells the browser *that* something changed and a little of what (event type and
network); the page then re-reads what it shows through the normal, permission-checked views. So
no data reaches a browser by a path that skips the views' checks, and message formats of the
live link can evolve without touching the browser.

The browser says one thing: which network its page shows live traffic of (`{"watch": <network
id>}`, or `{"watch": null}` for none). While the socket is open, the consumer renews a
`telemetry.watch` lease on that network every WATCH_RENEW_S, so the network's agents report
every 2 s as far as the budget allows (realtime/stats_rate.py); a closed tab's lease runs out by
itself. Anything else the browser sends gets `{"event": "error", "field", "detail"}` and is
otherwise ignored.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from meshadmin.mesh.models import Network
from meshadmin.mesh.permissions import can_view
from meshadmin.realtime.groups import (
    ALL_DASHBOARDS_GROUP,
    SESSION_LOGOUT,
    TELEMETRY_WATCH,
    agents_group,
    user_group,
)
from meshadmin.realtime.groups import dashboard_group as network_group
from meshadmin.realtime.stats_rate import WATCH_RENEW_S, WATCH_S

log = logging.getLogger(__name__)

CLOSE_SIGNED_OUT = 4401

# Event types forwarded to the browser (by prefix); anything else on our groups is ignored.
FORWARDED_PREFIXES = ("dashboard.", "telemetry.", "netmap.", "node.", "presence.")


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str] = []
    joined: list[str]
    watching: int | None = None  # the network this page watches
    _watch_task: asyncio.Task | None = None

    async def connect(self) -> None:
        self.joined = []
        user = self.scope.get("user")
        await self.accept()
        if user is None or not await database_sync_to_async(can_view)(user):
            await self.close(code=CLOSE_SIGNED_OUT)
            return
        self.joined = [user_group(user.pk), ALL_DASHBOARDS_GROUP]
        self.joined += [network_group(pk) for pk in await self._network_ids()]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.send_json({"event": "hello"})

    @database_sync_to_async
    def _network_ids(self) -> list[int]:
        return list(Network.objects.values_list("pk", flat=True))

    async def disconnect(self, code: int) -> None:
        self._stop_watching()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """`{"watch": <network id> | null}`; anything else gets an error naming the field."""
        if not isinstance(content, dict) or set(content) != {"watch"}:
            await self._refuse("watch", 'expected exactly {"watch": <network id> or null}')
            return
        network = content["watch"]
        if network is None:
            self._stop_watching()
            return
        if not isinstance(network, int) or isinstance(network, bool) \
                or network_group(network) not in getattr(self, "joined", []):
            await self._refuse("watch", "not the id of a network this dashboard shows")
            return
        if network == self.watching:
            return  # already renewed by the running task
        self._stop_watching()
        self.watching = network
        log.info("a dashboard page watches network %s", network,
                 extra={"event": "telemetry.watch", "network": network})
        self._watch_task = asyncio.get_running_loop().create_task(self._renew(network))

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None  # refused by receive_json, field named

    async def _refuse(self, field: str, detail: str) -> None:
        await self.send_json({"event": "error", "field": field, "detail": detail})

    def _stop_watching(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        self._watch_task, self.watching = None, None

    async def _renew(self, network: int) -> None:
        """Every WATCH_RENEW_S while watching: a WATCH_S lease on the network's report interval
        in each process that serves its agents."""
        while True:
            try:
                await self.channel_layer.group_send(agents_group(network), {
                    "type": TELEMETRY_WATCH, "network": network, "seconds": WATCH_S})
            except Exception as exc:  # the layer is down: the lease runs out, the page still works
                log.warning("telemetry watch of network %s not sent: %s: %s", network,
                            type(exc).__name__, exc)
            await asyncio.sleep(WATCH_RENEW_S)

    async def dispatch(self, message: dict) -> None:
        kind = message.get("type", "")
        if kind == SESSION_LOGOUT:
            await self.close(code=CLOSE_SIGNED_OUT)
            return
        if kind.startswith("websocket."):
            await super().dispatch(message)
            return
        if kind.startswith(FORWARDED_PREFIXES):
            network_id = message.get("network_id")
            if isinstance(network_id, int) and network_group(network_id) not in self.joined:
                # a network created after this socket opened: follow its live reports from now on
                self.joined.append(network_group(network_id))
                await self.channel_layer.group_add(network_group(network_id), self.channel_name)
            out = {"event": kind}
            for key in ("network", "network_id", "peer_id", "reason", "serial"):
                value = message.get(key)
                if isinstance(value, (str, int)) and not isinstance(value, bool):
                    out[key] = value
            await self.send_json(out)
            return
        log.debug("dashboard socket ignores %s", kind)
