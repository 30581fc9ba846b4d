"""DashboardConsumer: the browser's live socket (`/ws/dashboard/`).

Mounted behind AllowedHostsOriginValidator and the session AuthMiddlewareStack (routing.py), so
only a page from our own origin, with a logged-in session, gets here. A user who may not view the
dashboard, or whose session ends, gets close code 4401 and live.js sends the tab to login.

The socket only tells the browser *that* something changed and a little of what (event type and
network); the page then re-reads what it shows through the normal, permission-checked views. So
no data reaches a browser by a path that skips the views' checks, and message formats of the
live link can evolve without touching the browser.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from meshadmin.mesh.models import Network
from meshadmin.mesh.permissions import can_view
from meshadmin.realtime.groups import ALL_DASHBOARDS_GROUP, SESSION_LOGOUT, user_group
from meshadmin.realtime.groups import dashboard_group as network_group

log = logging.getLogger(__name__)

CLOSE_SIGNED_OUT = 4401

# Event types forwarded to the browser (by prefix); anything else on our groups is ignored.
FORWARDED_PREFIXES = ("dashboard.", "telemetry.", "netmap.", "node.", "presence.")


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str] = []
    joined: list[str]

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
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """The browser has nothing to say; anything it sends is ignored."""

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
