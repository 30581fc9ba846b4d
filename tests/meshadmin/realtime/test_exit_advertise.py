"""The websocket's `advertise` message: a node offers itself as an exit node (pending until an
operator approves it) or withdraws; repeats write nothing; the approval reaches its map."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from meshadmin.mesh.models import AuditEvent, Network, Node, Route
from meshadmin.mesh.services.exits import approve_exit_node
from nodeagent.protocol import messages
from tests.meshadmin.realtime.realtime_helpers import login, receive

pytestmark = [pytest.mark.django_db(transaction=True)]


async def _routes(peer_id: str) -> list:
    return [r async for r in Route.objects.filter(via__peer_id=peer_id).order_by("prefix")
            .values_list("prefix", "approved")]


async def _until(predicate, what: str) -> None:
    for _ in range(200):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


async def test_a_node_offers_itself_and_learns_it_was_approved(uk, belgium):
    comm, first = await login(uk[0])
    assert not first.node.is_exit
    await comm.send_to(bytes_data=messages.encode(messages.Advertise(exit_node=True)))

    async def offered():
        return await _routes(uk[0].peer_id) == [("0.0.0.0/0", False), ("::/0", False)]

    await _until(offered, "the offer is stored, pending")
    serial = (await Network.objects.aget(name="default")).serial
    await comm.send_to(bytes_data=messages.encode(messages.Advertise(exit_node=True)))  # again: nothing
    await asyncio.sleep(0.3)
    assert (await Network.objects.aget(name="default")).serial == serial
    offers = AuditEvent.objects.filter(action="exit.advertised", actor=f"node:{uk[0].peer_id}")
    assert await offers.acount() == 1
    node = await Node.objects.aget(peer_id=uk[0].peer_id)
    await database_sync_to_async(approve_exit_node)(node, actor="user:alice")
    while True:  # the approval reaches uk's own map
        msg = await receive(comm)
        if isinstance(msg, messages.Delta) and msg.delta.node is not None and msg.delta.node.is_exit:
            break
    await comm.send_to(bytes_data=messages.encode(messages.Advertise(exit_node=False)))

    async def withdrawn():
        return await _routes(uk[0].peer_id) == []

    await _until(withdrawn, "the offer is withdrawn")
    await comm.disconnect()
