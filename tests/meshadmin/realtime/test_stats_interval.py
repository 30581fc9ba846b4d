"""The server tells its agents how often to report their counters (realtime/stats_rate.py).

A process keeps its agents' reports within SHADOWMESH_AGENT_STATS_BUDGET per second: an agent that
names FEATURE_TELEMETRY in `auth` hears the interval after its first map, and every such socket
hears a new one when the process's sockets grew or shrank enough. An agent that does not name it
gets no `telemetry` frame (it would not know the type) but counts toward the budget.
"""

from __future__ import annotations

import asyncio

import pytest

from meshadmin.realtime import consumers
from meshadmin.realtime import stats_rate as rate_mod
from meshadmin.realtime.stats_rate import CEILING_S, FLOOR_S, StatsRate, interval_for
from nodeagent.protocol import messages
from tests.meshadmin.realtime.realtime_helpers import open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def fresh_rate():
    """This test's event loop starts with no agent sockets counted."""
    rate = rate_mod._rates[asyncio.get_running_loop()] = StatsRate()
    return rate


@pytest.fixture
def five(enrolled):
    return [enrolled(f"n{i}")[0] for i in range(5)]


async def login(ident, features: tuple[str, ...] = (messages.FEATURE_TELEMETRY,)):
    comm = await open_socket()
    challenge = await receive(comm)
    assert isinstance(challenge, messages.Challenge)
    await comm.send_to(bytes_data=messages.encode(
        messages.Auth(ident.peer_id, ident.sign_login(challenge.nonce), features=features)))
    assert isinstance(await receive(comm, ca_public_key=ident.ca_public_key), messages.Full)
    return comm


def test_the_interval_keeps_the_reports_within_the_budget_between_the_bounds():
    assert interval_for(0, 250) == FLOOR_S == 2.0
    assert interval_for(500, 250) == 2.0
    assert interval_for(5000, 250) == 20.0
    assert interval_for(4019, 250) == 16.1  # to a tenth of a second
    assert interval_for(100_000, 250) == CEILING_S
    assert interval_for(100_000, 0) == FLOOR_S  # no budget: the agents' own interval


async def test_an_agent_that_names_the_feature_is_told_the_interval_after_its_map(
        uk, belgium, settings, fresh_rate):
    settings.SHADOWMESH_AGENT_STATS_BUDGET = 250
    comm = await login(uk[0])
    told = await receive(comm)
    assert told == messages.Telemetry(FLOOR_S)
    # one that does not name it hears nothing of the kind, and still counts
    old = await login(belgium[0], features=())
    assert await old.receive_nothing(0.3)
    assert fresh_rate.sockets == 2 and len(fresh_rate.listeners) == 1
    await comm.disconnect()
    await old.disconnect()
    assert fresh_rate.sockets == 0 and len(fresh_rate.listeners) == 0


async def test_when_the_sockets_grow_or_shrink_enough_every_listener_hears_the_new_interval(
        five, settings, fresh_rate):
    settings.SHADOWMESH_AGENT_STATS_BUDGET = 1  # one report a second: n sockets -> n seconds
    nodes = five
    first = await login(nodes[0])
    assert await receive(first) == messages.Telemetry(2.0)
    second = await login(nodes[1])
    assert await receive(second) == messages.Telemetry(2.0)
    await fresh_rate.check()  # 2 sockets: still the floor, nothing to tell
    assert await first.receive_nothing(0.2)
    late = [await login(n, features=()) for n in nodes[2:4]]  # these count, but take no telemetry
    fifth = await login(nodes[4])
    assert await receive(fifth) == messages.Telemetry(5.0)  # told on login what the process needs now
    await fresh_rate.check()  # 5 sockets: 5 s is 2.5 times what the first two heard
    assert await receive(first) == messages.Telemetry(5.0)
    assert await receive(second) == messages.Telemetry(5.0)
    assert await receive(fifth) == messages.Telemetry(5.0)
    for comm in late:
        assert await comm.receive_nothing(0.2)
    await fresh_rate.check()  # unchanged: nobody hears it twice
    assert await first.receive_nothing(0.2)
    # 4 of 5 leave: 1 socket, the floor again, 2.5 times less
    for comm in (second, fifth, *late):
        await comm.disconnect()
    await fresh_rate.check()
    assert await receive(first) == messages.Telemetry(2.0)
    assert fresh_rate.retold == 2
    await first.disconnect()


def _report(uptime: float) -> bytes:
    return messages.encode(messages.Stats(uptime, ()))


async def _settle(comm) -> None:
    """Every frame sent before this one has been handled (frames are handled in order)."""
    await comm.send_to(bytes_data=messages.encode(messages.Resync(0)))
    assert isinstance(await receive(comm), messages.Full)


async def test_an_agent_told_an_interval_is_held_to_half_of_it(
        uk, belgium, settings, fresh_rate, monkeypatch):
    """Reports closer together than half the interval a socket's agent was told are dropped
    undecoded; an agent told nothing is held to MIN_STATS_INTERVAL_S only (0 here)."""
    monkeypatch.setattr(consumers, "MIN_STATS_INTERVAL_S", 0.0)
    settings.SHADOWMESH_AGENT_STATS_BUDGET = 0.01  # one socket: 100 s, so the longest, 30 s
    told = await login(uk[0])
    assert await receive(told) == messages.Telemetry(CEILING_S)
    untold = await login(belgium[0], features=())
    decoded: list[str] = []
    real = messages.decode_agent_message
    monkeypatch.setattr(messages, "decode_agent_message", lambda data: decoded.append("x") or real(data))
    for comm in (told, untold):
        decoded.clear()
        for uptime in (1.0, 1.1, 1.2):  # well within 15 s, as fast as the test sends them
            await comm.send_to(bytes_data=_report(uptime))
        await _settle(comm)
        assert len(decoded) == (2 if comm is told else 4)  # reports taken, and the resync
    await told.disconnect()
    await untold.disconnect()
