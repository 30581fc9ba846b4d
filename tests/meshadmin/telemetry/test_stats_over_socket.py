"""Agent counters sent over /ws/agent/ are stored and forwarded to the network's dashboard group."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from meshadmin.asgi import application
from meshadmin.mesh.models import Node
from meshadmin.realtime import consumers, groups
from meshadmin.telemetry.models import Sample
from nodeagent.protocol import messages
from nodeagent.protocol.counters import PeerCounters

pytestmark = pytest.mark.django_db(transaction=True)


async def _login(ident):
    comm = WebsocketCommunicator(application, "/ws/agent/")
    assert (await comm.connect())[0]
    nonce = messages.decode_server_message(await comm.receive_from()).nonce
    await comm.send_to(bytes_data=messages.encode(messages.Auth(ident.peer_id, ident.sign_login(nonce))))
    assert isinstance(messages.decode_server_message(await comm.receive_from()), messages.Full)
    return comm


def _stats(uptime, peer, tx):
    peer_stats = PeerCounters(peer, "direct", rtt_ms=2.0, tx_bytes=tx, rx_frames=tx // 100)
    return messages.Stats(uptime, (peer_stats,))


async def test_counters_become_samples_and_a_dashboard_update(uk, belgium, monkeypatch, settings):
    monkeypatch.setattr(consumers, "MIN_STATS_INTERVAL_S", 0.0)
    settings.SHADOWMESH_TELEMETRY_FLUSH_S = 0.05
    node = await Node.objects.aget(peer_id=belgium[0].peer_id)
    layer = get_channel_layer()
    watcher = await layer.new_channel()
    await layer.group_add(groups.dashboard_group(node.network_id), watcher)
    comm = await _login(belgium[0])
    presence_event = await layer.receive(watcher)
    assert presence_event["type"] == groups.PRESENCE_UPDATE and presence_event["online"] is True
    await comm.send_to(bytes_data=messages.encode(_stats(2.0, uk[0].peer_id, 1000)))
    await comm.send_to(bytes_data=messages.encode(_stats(4.0, uk[0].peer_id, 9000)))
    update = await layer.receive(watcher)
    assert update["type"] == groups.TELEMETRY_UPDATE and update["peer_id"] == belgium[0].peer_id
    # the update says who reported; pages re-read the figures
    assert set(update) == {"type", "network", "peer_id"} and update["network"] == node.network_id
    sample = await Sample.objects.aget()
    assert sample.tx_bytes == 8000 and sample.node_id == node.pk
    assert sample.peer_id == uk[0].peer_id and sample.rtt_ms == 2.0
    await comm.disconnect()
    offline = await layer.receive(watcher)
    assert offline["type"] == groups.PRESENCE_UPDATE and offline["online"] is False
