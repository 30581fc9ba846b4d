"""The embedded channel layer: group fan-out without per-member tasks, expiry without a sweep per receive."""

from __future__ import annotations

import asyncio

import pytest

from meshadmin.realtime import layers
from meshadmin.realtime.layers import LocalChannelLayer


async def test_a_group_send_reaches_every_member_once():
    layer = LocalChannelLayer()
    channels = [await layer.new_channel() for _ in range(50)]
    for ch in channels:
        await layer.group_add("agents.1", ch)
    await layer.group_send("agents.1", {"type": "netmap.changed", "serial": 7})
    for ch in channels:
        assert await layer.receive(ch) == {"type": "netmap.changed", "serial": 7}
    assert layer.channels == {}  # drained queues are dropped, as in the parent


async def test_each_member_gets_its_own_copy_of_the_event():
    layer = LocalChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    for ch in (a, b):
        await layer.group_add("g", ch)
    await layer.group_send("g", {"type": "x", "peers": [1]})
    first = await layer.receive(a)
    first["peers"].append(2)
    assert (await layer.receive(b))["peers"] == [1]


async def test_an_expired_message_is_never_received_and_its_channel_leaves_the_groups():
    layer = LocalChannelLayer(expiry=-1)  # every message is already expired when queued
    ch = await layer.new_channel()
    await layer.group_add("g", ch)
    await layer.group_send("g", {"type": "x"})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(ch), 0.05)
    assert ch not in layer.groups.get("g", {})


async def test_a_channel_nobody_reads_leaves_its_groups_at_the_next_sweep(monkeypatch):
    layer = LocalChannelLayer(expiry=-1)
    reader, stale = await layer.new_channel(), await layer.new_channel()
    for ch in (reader, stale):
        await layer.group_add("g", ch)
    await layer.group_send("g", {"type": "x"})
    monkeypatch.setattr(layers, "SWEEP_INTERVAL_S", 0.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(reader), 0.05)
    assert layer.groups.get("g", {}) == {}


async def test_sweeps_of_all_channels_run_at_most_once_per_interval(monkeypatch):
    layer = LocalChannelLayer()
    sweeps = []
    monkeypatch.setattr(layer, "_clean_expired", lambda: sweeps.append(1))
    channels = [await layer.new_channel() for _ in range(20)]
    for ch in channels:
        await layer.group_add("g", ch)
    await layer.group_send("g", {"type": "x"})
    for ch in channels:
        await layer.receive(ch)
    assert len(sweeps) == 1


async def test_a_full_member_misses_the_group_message_and_the_others_still_get_it():
    layer = LocalChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.send(full, {"type": "first"})
    for ch in (full, free):
        await layer.group_add("g", ch)
    await layer.group_send("g", {"type": "second"})
    assert await layer.receive(free) == {"type": "second"}
    assert await layer.receive(full) == {"type": "first"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(full), 0.05)
