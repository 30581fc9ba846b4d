"""How a committed change becomes a push: merged per burst, skipped when no node is affected,
queued to Celery outside a serving process, and sent by the worker path to the network's group."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from meshadmin.mesh.changes import ALL_NODES, Change
from meshadmin.realtime import groups, tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch, settings):
    """Pretend a broker is configured and record what would be queued."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(tasks, "_loop", None)
    calls = []
    monkeypatch.setattr(tasks.push_netmaps, "apply_async",
                        lambda args, countdown: calls.append((args, countdown)))
    return calls


def test_a_burst_of_changes_queues_one_push(network, queued):
    for i in range(5):
        tasks.on_change_announced(Change, change=Change(network.pk, "route.created", ALL_NODES, i + 1))
    assert queued == [((network.pk,), tasks.debounce_seconds())]


def test_a_change_that_affects_no_node_pushes_nothing(network, queued):
    tasks.on_change_announced(Change, change=Change(network.pk, "token.created", frozenset(), 1))
    assert queued == []


def test_the_debounce_never_exceeds_half_a_second(settings):
    settings.SHADOWMESH_NETMAP_DEBOUNCE_S = 5
    assert tasks.debounce_seconds() == 0.5


def test_the_worker_path_tells_the_network_group_and_frees_the_next_push(network, queued):
    tasks.on_change_announced(Change, change=Change(network.pk, "node.renamed", ALL_NODES, 1))
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(groups.agents_group(network.pk), channel)
    assert tasks.push_netmaps(network.pk) == 1
    event = async_to_sync(layer.receive)(channel)
    network.refresh_from_db()
    changed_at = event.pop("changed_at")  # when the change committed: the push latency's start
    assert event == {"type": groups.NETMAP_CHANGED, "network": network.pk, "serial": network.serial}
    assert isinstance(changed_at, float) and abs(changed_at - time.time()) < 60
    tasks.on_change_announced(Change, change=Change(network.pk, "node.renamed", ALL_NODES, 2))
    assert len(queued) == 2  # the pending key was cleared by the push
    # in the PostgreSQL pass the group lives in Redis and outlives the test's layer object
    async_to_sync(layer.group_discard)(groups.agents_group(network.pk), channel)


@pytest.mark.django_db(transaction=True)
async def test_on_a_serving_loop_the_processes_are_told_to_load_the_view_before_the_push(network, settings,
                                                                                         monkeypatch):
    """The first change of a burst sends netmap.prefetch to the network's group at once; the push
    (netmap.changed) follows after the debounce."""
    import asyncio

    settings.SHADOWMESH_NETMAP_DEBOUNCE_S = 0.2
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(tasks, "_loop", loop)
    tasks.shared_cache().delete(tasks.pending_key(network.pk))
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(groups.agents_group(network.pk), channel)
    tasks.on_change_announced(Change, change=Change(network.pk, "node.renamed", ALL_NODES, 7))
    first = await asyncio.wait_for(layer.receive(channel), 5)
    assert first == {"type": groups.NETMAP_PREFETCH, "network": network.pk, "serial": 7}
    second = await asyncio.wait_for(layer.receive(channel), 5)
    assert second["type"] == groups.NETMAP_CHANGED  # then the push
    await layer.group_discard(groups.agents_group(network.pk), channel)
