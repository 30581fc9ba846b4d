"""A write through the operator REST API reaches connected agents as a netmap push, like the same
write from the dashboard: the rename of a node and a route through it, each a delta on the socket."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from meshadmin.mesh.models import Network
from meshadmin.mesh.services.apikeys import create_api_key
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm
from tests.meshadmin.api.operator_client import OperatorClient
from tests.meshadmin.realtime.realtime_helpers import login, receive

pytestmark = pytest.mark.django_db(transaction=True)


async def test_api_writes_are_pushed_to_the_connected_agents(uk, belgium):
    _, plaintext = await database_sync_to_async(create_api_key)("ops")
    operator = OperatorClient(plaintext)
    uk_comm, uk_map = await login(uk[0])
    pid = belgium[0].peer_id

    response = await database_sync_to_async(operator.patch)(f"/api/nodes/{pid}", {"name": "brussels"})
    assert response.status_code == 200
    msg = await receive(uk_comm)
    assert isinstance(msg, messages.Delta) and msg.delta.base_serial == uk_map.serial
    renamed = nm.apply_delta(uk_map, msg.delta)
    assert renamed.peer(pid).name == "brussels"
    assert renamed.serial == (await Network.objects.aget(name="default")).serial

    response = await database_sync_to_async(operator.put)(
        f"/api/nodes/{pid}/routes", {"prefixes": ["192.168.40.0/24"], "approved": True})
    assert response.status_code == 200
    routed = nm.apply_delta(renamed, (await receive(uk_comm)).delta)
    assert [(r.prefix, r.via) for r in routed.routes] == [("192.168.40.0/24", pid)]
    await uk_comm.disconnect()
