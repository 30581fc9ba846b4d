"""How a committed change becomes a push: at once on a quiet network, merged per burst (at most one
push per debounce), skipped when no node is affected, queued to Celery outside a serving process,
and sent by the worker path to the network's group."""

from __future__ import annotations

import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from meshadmin.mesh.changes import ALL_NODES, Change
from meshadmin.realtime import groups, tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def own_keys(monkeypatch):
    """Each test's pending and pushed keys apart from the other tests' (the shared cache is Redis
    in the PostgreSQL pass, and network ids repeat between tests)."""
    run = uuid.uuid4().hex
    monkeypatch.setattr(tasks, "KEY_PREFIX", f"test-pending-{run}")
    monkeypatch.setattr(tasks, "PUSHED_PREFIX", f"test-pushed-{run}")


@pytest.fixture
def queued(monkeypatch, settings):
    """Pretend a broker is configured and record what would be queued."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    monkeypatch.setattr(tasks, "_loop", None)
    calls = []
    monkeypatch.setattr(tasks.push_netmaps, "apply_async",
                        lambda args, countdown: calls.append((args, countdown)))
    return calls


def test_a_burst_of_changes_on_a_quiet_network_queues_one_push_at_once(network, queued):
    for i in range(5):
        tasks.on_change_announced(Change, change=Change(network.pk, "route.created", ALL_NODES, i + 1))
    assert queued == [((network.pk,), 0.0)]


def test_a_change_soon_after_a_push_waits_for_the_rest_of_the_debounce(network, queued, settings,
                                                                        monkeypatch):
    settings.SHADOWMESH_NETMAP_DEBOUNCE_S = 0.4
    monkeypatch.setattr(tasks, "send_to_groups", lambda pushes: None)
    tasks.on_change_announced(Change, change=Change(network.pk, "route.created", ALL_NODES, 1))
    tasks.push_netmaps(network.pk)  # the push the first change queued
    for i in range(3):
        tasks.on_change_announced(Change, change=Change(network.pk, "route.created", ALL_NODES, i + 2))
    assert [args for args, _ in queued] == [(network.pk,), (network.pk,)]
    assert queued[0][1] == 0.0
    assert 0.0 < queued[1][1] <= 0.4  # the rest of the 0.4 s since the push, not at once
    # once the debounce has passed since the last push, the next change goes at once again
    tasks.push_netmaps(network.pk)  # the second push, as queued
    tasks.shared_cache().set(tasks.pushed_key(network.pk), time.time() - 0.5, timeout=30)  # made 0.5 s ago
    tasks.on_change_announced(Change, change=Change(network.pk, "route.created", ALL_NODES, 5))
    assert queued[2] == ((network.pk,), 0.0)


@pytest.mark.parametrize("now, last, debounce, expected", [
    (100.0, None, 0.3, 0.0),  # no push known: at once
    (100.0, 99.0, 0.3, 0.0),  # the last push long ago
    (100.0, 99.7, 0.3, 0.0),  # exactly one debounce ago
    (100.0, 99.9, 0.3, 0.2),  # the rest of the window
    (100.0, 100.0, 0.3, 0.3),  # pushed this instant: a whole debounce
    (100.0, 105.0, 0.3, 0.3),  # a clock step backwards: never more than the debounce
    (100.0, 99.9, 0.0, 0.0),  # no debounce at all
    (100.0, "garbage", 0.3, 0.0),  # an unreadable key counts as unknown
    (100.0, True, 0.3, 0.0),
])
def test_push_delay(now, last, debounce, expected):
    assert tasks.push_delay(now, last, debounce) == pytest.approx(expected)


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
async def test_on_a_serving_loop_a_lone_change_is_pushed_at_once_and_a_burst_prefetches(network, settings,
                                                                                        monkeypatch):
    """On a quiet network the first change is pushed at once (no prefetch: nothing to wait out);
    a change during the debounce after that push sends netmap.prefetch to the network's group at
    once and the push (netmap.changed) when the debounce since the last push has passed."""
    import asyncio

    settings.SHADOWMESH_NETMAP_DEBOUNCE_S = 0.2
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(tasks, "_loop", loop)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(groups.agents_group(network.pk), channel)
    tasks.on_change_announced(Change, change=Change(network.pk, "node.renamed", ALL_NODES, 7))
    first = await asyncio.wait_for(layer.receive(channel), 5)
    assert first["type"] == groups.NETMAP_CHANGED  # the push itself, no prefetch before it
    tasks.on_change_announced(Change, change=Change(network.pk, "node.renamed", ALL_NODES, 8))
    second = await asyncio.wait_for(layer.receive(channel), 5)
    assert second == {"type": groups.NETMAP_PREFETCH, "network": network.pk, "serial": 8}
    third = await asyncio.wait_for(layer.receive(channel), 5)
    assert third["type"] == groups.NETMAP_CHANGED  # then the push
    await layer.group_discard(groups.agents_group(network.pk), channel)
