"""The server tells its agents how often to report their counters (realtime/stats_rate.py).

A process keeps its agents' reports within SHADOWMESH_AGENT_STATS_BUDGET per second: an agent that
names FEATURE_TELEMETRY in `auth` hears the interval after its first map, and every such socket
hears a new one when the process's sockets grew or shrank enough. An agent that does not name it
gets no `telemetry` frame (it would not know the type) but counts toward the budget. A dashboard
page that shows a network's live traffic takes a lease on that network: its agents are told the
floor (within half the budget) for as long as the page renews it.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from meshadmin.realtime import consumers
from meshadmin.realtime import stats_rate as rate_mod
from meshadmin.realtime.stats_rate import CEILING_S, FLOOR_S, WATCH_S, StatsRate, interval_for, intervals_for
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


def test_a_watched_network_takes_half_the_budget_at_most_and_leaves_the_others_half_at_least():
    assert intervals_for(0, 5000, 250) == (FLOOR_S, 20.0)  # nothing watched: as before
    assert intervals_for(100, 4900, 250) == (2.0, 24.5)  # 50/s for the watched, 200/s left
    assert intervals_for(125, 4875, 250) == (2.0, 26.0)
    assert intervals_for(500, 4500, 250) == (4.0, CEILING_S)  # the watched get 125/s at most
    assert intervals_for(500, 0, 250) == (FLOOR_S, FLOOR_S)  # never slower than unwatched
    assert intervals_for(2, 0, 0.5)[0] == 4.0  # not the 8 s of half the budget
    assert intervals_for(600, 400, 250) == (4.0, 4.0)  # the others never faster than without a watch
    assert intervals_for(10, 10, 0) == (FLOOR_S, FLOOR_S)  # no budget


def test_a_lease_ends_by_itself_and_only_grows_when_renewed():
    now = [100.0]
    rate = StatsRate(clock=lambda: now[0])
    assert rate.watch(7, WATCH_S) is True  # new: the caller checks at once
    assert rate.watch(7, 10) is False  # renewed (not new), and a shorter lease does not cut it
    now[0] += WATCH_S - 1
    assert rate.watched() == {7}
    assert rate.watch(7, 3600) is False
    now[0] += WATCH_S - 0.5  # renewed for WATCH_S at most, from the renewal
    assert rate.watched() == {7}
    now[0] += 0.5
    assert rate.watched() == set()
    assert rate.watch(8, 0) is False and rate.watched() == set()  # a zero lease is none


def _lab_agents(api, identity_factory, count: int):
    """`count` agents enrolled in a second network, "lab"."""
    from meshadmin.mesh.services.networks import get_or_create_network
    from meshadmin.mesh.services.tokens import create_token

    lab = get_or_create_network("lab")
    out = []
    for i in range(count):
        ident = identity_factory()
        response = api.enroll(create_token(lab, uses=1)[1], ident, f"lab{i}")
        assert response.status_code == 201, response.content
        ident.ca_public_key = base64.b64decode(response.json()["ca_public_key"])
        out.append(ident)
    return lab, out


def _staff_session() -> str:
    client = Client()
    client.force_login(User.objects.create_user("alice", password="x" * 20, is_staff=True))
    return client.cookies["sessionid"].value


async def _dashboard(session: str) -> WebsocketCommunicator:
    from meshadmin.asgi import application

    comm = WebsocketCommunicator(application, "/ws/dashboard/", headers=[
        (b"host", b"testserver"), (b"origin", b"http://testserver"),
        (b"cookie", f"sessionid={session}".encode())])
    connected, _ = await comm.connect()
    assert connected
    assert await comm.receive_json_from(timeout=5) == {"event": "hello"}
    return comm


async def test_a_dashboard_page_watching_a_network_gets_its_agents_reporting_every_2_s(
        uk, network, api, identity_factory, settings):
    """Budget 1/s, uk in "default" and three agents in "lab": 4 sockets, 4 s for everyone. A page
    watching "default" makes uk hear 2 s at once (lab's agents take no telemetry and hear
    nothing); when the lease ends uk hears 4 s again."""
    now = [1000.0]
    rate = rate_mod._rates[asyncio.get_running_loop()] = StatsRate(clock=lambda: now[0])
    settings.SHADOWMESH_AGENT_STATS_BUDGET = 1
    _, lab_agents = await sync_to_async(_lab_agents)(api, identity_factory, 3)
    comm = await login(uk[0])
    assert await receive(comm) == messages.Telemetry(2.0)  # alone in the process: the floor
    others = [await login(ident, features=()) for ident in lab_agents]
    await rate.check()
    assert await receive(comm) == messages.Telemetry(4.0)  # 4 sockets on 1/s
    page = await _dashboard(await sync_to_async(_staff_session)())
    await page.send_json_to({"watch": network.pk})
    assert await receive(comm) == messages.Telemetry(2.0)  # told at once
    assert rate.watched() == {network.pk}
    for other in others:
        assert await other.receive_nothing(0.1)
    await rate.check()
    assert await comm.receive_nothing(0.2)  # nothing new while the lease holds
    now[0] += WATCH_S + 1  # the page stopped renewing (its renewals come every 20 s of real time)
    await rate.check()
    assert await receive(comm) == messages.Telemetry(4.0)
    await page.send_json_to({"watch": None})
    for c in (page, comm, *others):
        await c.disconnect()
    assert rate.sockets == 0 and rate.per_network == {}


@pytest.mark.parametrize("sent, why", [
    ({"watch": "1"}, "not the id of a network"),
    ({"watch": True}, "not the id of a network"),
    ({"watch": 999_999}, "not the id of a network"),
    ({"watch": 1, "also": 2}, "expected exactly"),
    ([1], "expected exactly"),
    ("hello", "expected exactly"),
])
async def test_a_page_that_sends_anything_else_gets_an_error_naming_the_field(network, sent, why):
    page = await _dashboard(await sync_to_async(_staff_session)())
    await page.send_json_to(sent)
    answer = await page.receive_json_from(timeout=5)
    assert answer["event"] == "error" and answer["field"] == "watch" and why in answer["detail"]
    await page.send_to(text_data="{not json")
    answer = await page.receive_json_from(timeout=5)
    assert answer["event"] == "error" and answer["field"] == "watch"
    await page.disconnect()


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
    assert await fifth.receive_nothing(0.2)  # it heard 5 s already
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
