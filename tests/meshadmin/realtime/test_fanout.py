"""The process's one channel for agent sockets (realtime/fanout.py): one layer message per process
and change, whatever the number of sockets; membership that follows the sockets, also when a join
and a leave of one group overlap; and sockets that missed a push caught up by the sweep."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.db.models import F

from meshadmin.mesh.models import Network, Node
from meshadmin.realtime import groups
from meshadmin.realtime.fanout import DELIVER_CHUNK, ProcessFanout, group_of, process_fanout
from meshadmin.realtime.layers import LocalChannelLayer
from nodeagent.protocol import messages
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.constants import CloseCode
from tests.meshadmin.realtime.realtime_helpers import close_code, login, receive


class Socket:
    def __init__(self, serial: int | None = None) -> None:
        self.serial = serial
        self.events: list[dict] = []

    async def fanout_deliver(self, event: dict) -> None:
        self.events.append(event)

    def fanout_serial(self) -> int | None:
        return self.serial


class CountingLayer(LocalChannelLayer):
    """Counts what the layer carries; `slow_discard` holds each group_discard for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.slow_discard = 0.0

    async def send(self, channel, message):
        self.sent += 1
        await super().send(channel, message)

    async def group_discard(self, group, channel):
        await asyncio.sleep(self.slow_discard)
        await super().group_discard(group, channel)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_change_is_one_layer_message_per_process_and_reaches_every_socket_once():
    layer = CountingLayer()
    fanout = ProcessFanout(layer, reconcile_s=3600)
    sockets = [Socket() for _ in range(50)]
    for s in sockets:
        await fanout.add(groups.agents_group(7), s)
    other = Socket()
    await fanout.add(groups.agents_group(8), other)
    assert list(layer.groups[groups.agents_group(7)]) == [fanout.channel]  # one member: the process
    await layer.group_send(groups.agents_group(7), {"type": groups.NETMAP_CHANGED, "network": 7, "serial": 3})
    await asyncio.sleep(0.05)
    assert layer.sent == 1 and fanout.received == 1
    assert all(s.events == [{"type": groups.NETMAP_CHANGED, "network": 7, "serial": 3}] for s in sockets)
    assert other.events == []
    for s in [*sockets, other]:
        await fanout.discard(groups.agents_group(7) if s is not other else groups.agents_group(8), s)
    assert groups.agents_group(7) not in layer.groups and groups.agents_group(8) not in layer.groups


async def test_the_process_leaves_a_group_with_its_last_socket_and_stays_while_one_joins_meanwhile():
    layer = CountingLayer()
    fanout = ProcessFanout(layer, reconcile_s=3600)
    first, second = Socket(), Socket()
    group = groups.node_group("ab" * 16)
    await fanout.add(group, first)
    layer.slow_discard = 0.1
    leaving = asyncio.ensure_future(fanout.discard(group, first))  # the layer is slow to take it out
    await settle()
    await fanout.add(group, second)  # the agent reconnected to this process meanwhile
    await leaving
    assert fanout.channel in layer.groups.get(group, {}) and group in fanout.joined
    await layer.group_send(group, {"type": groups.AGENT_REVOKE, "peer_id": "ab" * 16, "reason": "x"})
    await asyncio.sleep(0.05)
    assert second.events and not first.events
    await fanout.discard(group, second)
    assert group not in layer.groups and not fanout.joined


def test_the_group_is_read_from_the_event():
    assert group_of({"type": groups.NETMAP_CHANGED, "network": 4, "serial": 1}) == groups.agents_group(4)
    assert group_of({"type": groups.AGENT_REVOKE, "peer_id": "cd" * 16}) == groups.node_group("cd" * 16)
    assert group_of({"type": groups.NETMAP_CHANGED, "serial": 1}) is None
    assert group_of({"type": groups.AGENT_REVOKE, "reason": "no peer named"}) is None


async def test_an_event_that_names_no_group_is_dropped():
    layer = CountingLayer()
    fanout = ProcessFanout(layer, reconcile_s=3600)
    s = Socket()
    await fanout.add(groups.agents_group(1), s)
    await layer.group_send(groups.agents_group(1), {"type": groups.NETMAP_CHANGED, "serial": 9})
    await asyncio.sleep(0.05)
    assert fanout.received == 1 and s.events == []
    await fanout.discard(groups.agents_group(1), s)


async def test_the_sweep_catches_up_sockets_behind_the_serial_of_the_previous_sweep_only():
    serials = {1: 5}

    async def read(networks):
        return {n: serials[n] for n in networks if n in serials}

    fanout = ProcessFanout(CountingLayer(), read_serials=read, reconcile_s=3600)
    behind, current, fresh = Socket(4), Socket(5), Socket(None)  # fresh: no map sent yet (logging in)
    for s in (behind, current, fresh):
        await fanout.add(groups.agents_group(1), s)
    assert await fanout.reconcile() == 0  # the first sweep: serial 5's push may still be on its way
    serials[1] = 6  # a newer change, its push on its way
    assert await fanout.reconcile() == 1  # 5 was seen a sweep ago: `behind` missed its push
    await settle()
    assert behind.events == [{"type": groups.NETMAP_CHANGED, "network": 1, "serial": 6}]
    assert current.events == [] and fresh.events == []  # not behind 5; nothing sent yet
    for s in (behind, current, fresh):
        await fanout.discard(groups.agents_group(1), s)


class ConcurrencyLayer(LocalChannelLayer):
    """Records how many joins and leaves are in flight at once (each would hold a Redis connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.most = 0

    async def _counted(self, op, group, channel):
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            await op(group, channel)
        finally:
            self.in_flight -= 1

    async def group_add(self, group, channel):
        await self._counted(super().group_add, group, channel)

    async def group_discard(self, group, channel):
        await self._counted(super().group_discard, group, channel)


async def test_thousands_of_sockets_closing_at_once_leave_their_groups_a_bounded_number_at_a_time():
    """Every agent socket has a node group of its own: when they all close together (an outage
    on the agents' side), the process leaves that many groups. Unbounded, each leave held a
    connection of the layer's pool at once, and past the pool's limit the leaves failed."""
    from meshadmin.realtime.fanout import LAYER_OPS

    layer = ConcurrencyLayer()
    fanout = ProcessFanout(layer, reconcile_s=3600)
    sockets = [Socket() for _ in range(4 * LAYER_OPS)]
    await asyncio.gather(*(fanout.add(groups.node_group(f"{i:040x}"), s) for i, s in enumerate(sockets)))
    assert len(layer.groups) == len(sockets) and layer.most <= LAYER_OPS
    layer.most = 0
    await asyncio.gather(*(fanout.discard(groups.node_group(f"{i:040x}"), s) for i, s in enumerate(sockets)))
    assert layer.most == LAYER_OPS  # as many as allowed, and no more
    assert not layer.groups and not fanout.joined and not fanout.members


async def test_a_prepared_change_reaches_every_socket_without_a_task_that_waits():
    """With `prepare` (the consumers load the network's view once), the event goes to the sockets
    once it is done, and a socket that need not wait is handled on the spot: no task is left
    pending for it."""
    layer = CountingLayer()
    loaded = asyncio.Event()
    prepared: list[dict] = []

    async def prepare(event: dict) -> None:
        prepared.append(event)
        await loaded.wait()

    fanout = ProcessFanout(layer, reconcile_s=3600, prepare=prepare)
    sockets = [Socket() for _ in range(20)]
    handed = fanout.deliver
    done_on_return: list[int] = []  # sockets holding the event when `deliver` returns

    def deliver(event, only=None):
        n = handed(event, only)
        done_on_return.append(sum(bool(s.events) for s in sockets))
        return n

    fanout.deliver = deliver  # type: ignore[method-assign]
    for s in sockets:
        await fanout.add(groups.agents_group(3), s)
    revoke = Socket()
    await fanout.add(groups.node_group("ef" * 16), revoke)
    await layer.group_send(groups.agents_group(3), {"type": groups.NETMAP_CHANGED, "network": 3, "serial": 8})
    await layer.group_send(groups.node_group("ef" * 16), {"type": groups.AGENT_REVOKE, "peer_id": "ef" * 16})
    await settle()
    assert len(prepared) == 1 and all(s.events == [] for s in sockets)  # held until prepared
    assert revoke.events  # other events are not held
    loaded.set()
    await settle()
    assert all(s.events == [{"type": groups.NETMAP_CHANGED, "network": 3, "serial": 8}] for s in sockets)
    assert done_on_return[-1] == len(sockets)  # each was handled on the spot, not scheduled
    assert not fanout._delivering


async def test_a_large_group_is_handed_the_event_a_chunk_per_round_of_the_loop():
    """What else is ready (an HTTP request's next step) runs between two chunks of a fan-out, not
    after all of it; every socket still gets the event, once."""
    layer = CountingLayer()
    fanout = ProcessFanout(layer, reconcile_s=3600)
    order: list[int] = []

    class Numbered(Socket):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

        async def fanout_deliver(self, event: dict) -> None:
            order.append(self.n)
            await super().fanout_deliver(event)

    sockets = [Numbered(n) for n in range(2 * DELIVER_CHUNK + 5)]
    for s in sockets:
        await fanout.add(groups.agents_group(4), s)
    seen_by_other_work: list[int] = []
    loop = asyncio.get_running_loop()
    loop.call_soon(lambda: seen_by_other_work.append(len(order)))  # ready before the fan-out starts
    handed = fanout.deliver({"type": groups.NETMAP_CHANGED, "network": 4, "serial": 2})
    assert handed == len(sockets) and len(order) == DELIVER_CHUNK  # the first chunk on the spot
    await settle()
    assert seen_by_other_work == [DELIVER_CHUNK]  # ran before the second chunk
    assert sorted(order) == list(range(len(sockets)))
    assert all(s.events == [{"type": groups.NETMAP_CHANGED, "network": 4, "serial": 2}] for s in sockets)


async def test_a_prefetch_loads_for_the_process_and_reaches_no_socket():
    layer = CountingLayer()
    prepared: list[dict] = []

    async def prepare(event: dict) -> None:
        prepared.append(event)

    fanout = ProcessFanout(layer, reconcile_s=3600, prepare=prepare)
    s = Socket()
    await fanout.add(groups.agents_group(4), s)
    prefetch = {"type": groups.NETMAP_PREFETCH, "network": 4, "serial": 2}
    await layer.group_send(groups.agents_group(4), prefetch)
    await layer.send(fanout.channel, {**prefetch, "network": 5})  # a network it serves no socket of
    await asyncio.sleep(0.05)
    assert prepared == [prefetch] and s.events == [] and fanout.received == 2
    await fanout.discard(groups.agents_group(4), s)


# ---------------------------------------------------------------------- through the agent socket

pytestmark_db = pytest.mark.django_db(transaction=True)


async def in_layer(group: str) -> list[str]:
    """The channels of this process that the configured layer (in-memory, or Redis in the
    PostgreSQL pass) has in `group` (a shared Redis may hold other runs' channels too: a channel
    name starts with its layer's own prefix, up to the '!')."""
    layer = get_channel_layer()
    if isinstance(layer, LocalChannelLayer):
        return sorted(layer.groups.get(group, {}))
    conn = layer.connection(layer.consistent_hash(group))  # channels_redis: a sorted set per group
    ours = f"specific.{layer.client_prefix}!"
    return sorted(c for x in await conn.zrange(layer._group_key(group), 0, -1)
                  if (c := x.decode()).startswith(ours))


@pytestmark_db
async def test_the_agent_sockets_of_a_process_share_one_channel_in_the_layer(uk, belgium, mac):
    sockets = [await login(p[0]) for p in (uk, belgium, mac)]
    network = await Network.objects.aget(name="default")
    assert await in_layer(groups.agents_group(network.pk)) == [process_fanout().channel]
    for p in (uk, belgium, mac):
        assert await in_layer(groups.node_group(p[0].peer_id)) == [process_fanout().channel]
    for comm, _ in sockets:
        await comm.disconnect()
    await asyncio.sleep(0.1)
    assert await in_layer(groups.agents_group(network.pk)) == []


@pytestmark_db
async def test_agent_revoke_to_the_nodes_group_closes_its_socket(uk, belgium):
    uk_comm, _ = await login(uk[0])
    be_comm, _ = await login(belgium[0])
    await get_channel_layer().group_send(groups.node_group(uk[0].peer_id), {
        "type": groups.AGENT_REVOKE, "peer_id": uk[0].peer_id, "reason": "revoked by test"})
    assert await close_code(uk_comm) == CloseCode.REVOKED
    assert await be_comm.receive_nothing(timeout=0.2)  # another node's socket is untouched
    await be_comm.disconnect()


@pytestmark_db
async def test_a_socket_that_missed_a_push_gets_the_change_at_the_next_sweep(settings, uk, belgium):
    settings.SHADOWMESH_NETMAP_RECONCILE_S = 0.2
    uk_comm, uk_map = await login(uk[0])
    # a change committed without any push reaching the process (as when the layer dropped it)
    await Node.objects.filter(peer_id=belgium[0].peer_id).aupdate(name="belgium-renamed")
    await Network.objects.filter(name="default").aupdate(serial=F("serial") + 1)
    msg = await receive(uk_comm, timeout=3)
    assert isinstance(msg, messages.Delta)
    after = nm.apply_delta(uk_map, msg.delta)
    assert "belgium-renamed" in {p.name for p in after.peers}
    await uk_comm.disconnect()


# ---------------------------------------------------------------------- a login naming the held serial

async def _login_naming(ident, serial):
    from tests.meshadmin.realtime.realtime_helpers import open_socket

    comm = await open_socket()
    challenge = await receive(comm)
    await comm.send_to(bytes_data=messages.encode(
        messages.Auth(ident.peer_id, ident.sign_login(challenge.nonce), serial)))
    return comm, await receive(comm, ca_public_key=ident.ca_public_key)


@pytestmark_db
async def test_a_login_holding_the_current_serial_gets_an_empty_delta_not_the_full_map(uk, belgium):
    comm, first = await _login_naming(uk[0], None)  # an agent without the field: the full map
    assert isinstance(first, messages.Full)
    await comm.disconnect()
    comm, answer = await _login_naming(uk[0], first.netmap.serial)
    assert isinstance(answer, messages.Delta)  # signed by the network's CA (checked by `receive`)
    assert answer.delta.is_empty and answer.delta.base_serial == answer.delta.serial == first.netmap.serial
    assert answer.delta.network == first.netmap.network
    # the socket is logged in like any other: a change reaches it as a delta on the held map
    await Node.objects.filter(peer_id=belgium[0].peer_id).aupdate(name="belgium-2")
    await Network.objects.filter(name="default").aupdate(serial=F("serial") + 1)
    await comm.send_to(bytes_data=messages.encode(messages.Resync(first.netmap.serial)))
    full = await receive(comm, ca_public_key=uk[0].ca_public_key)
    assert isinstance(full, messages.Full) and full.netmap.serial == first.netmap.serial + 1
    await comm.disconnect()


@pytestmark_db
async def test_a_login_holding_an_older_or_unknown_serial_gets_the_full_map(uk, belgium):
    comm, first = await _login_naming(uk[0], None)
    await comm.disconnect()
    for held in (first.netmap.serial - 1, first.netmap.serial + 5):
        comm, answer = await _login_naming(uk[0], held)
        assert isinstance(answer, messages.Full) and answer.netmap == first.netmap
        await comm.disconnect()


class FailingLayer(CountingLayer):
    """While `down`, each receive and group_add fails and counts `down` one lower (Redis stopped,
    then started again); it comes back having lost every group (a restarted Redis starts empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = 0

    def _fail(self):
        self.down -= 1
        self.groups.clear()
        raise ConnectionError("redis is down")

    async def receive(self, channel):
        if self.down:
            self._fail()
        return await super().receive(channel)

    async def group_add(self, group, channel):
        if self.down:
            self._fail()
        await super().group_add(group, channel)


async def test_after_the_layer_fails_the_process_joins_its_groups_again_and_catches_up_at_once():
    serials = {1: 5}

    async def read(networks):
        return {n: serials[n] for n in networks if n in serials}

    layer = FailingLayer()
    fanout = ProcessFanout(layer, read_serials=read, reconcile_s=3600)
    stale, current = Socket(4), Socket(5)  # `stale` missed a push while the layer was down
    for s in (stale, current):
        await fanout.add(groups.agents_group(1), s)
    layer.down = 2  # the pump's next receive fails, and the first attempt to join again
    await layer.send(fanout.channel, {"type": "wake"})
    for _ in range(200):
        if fanout.recoveries:
            break
        await asyncio.sleep(0.05)
    assert fanout.recoveries == 1
    await settle()
    assert list(layer.groups[groups.agents_group(1)]) == [fanout.channel]  # joined again
    assert stale.events == [{"type": groups.NETMAP_CHANGED, "network": 1, "serial": 5}]
    assert current.events == []
    await layer.group_send(groups.agents_group(1), {"type": groups.NETMAP_CHANGED, "network": 1, "serial": 6})
    await asyncio.sleep(0.05)
    assert current.events == [{"type": groups.NETMAP_CHANGED, "network": 1, "serial": 6}]  # pushes flow again
    for s in (stale, current):
        await fanout.discard(groups.agents_group(1), s)


async def test_a_dashboard_announcement_the_layer_refuses_does_not_fail_the_flush(settings, monkeypatch):
    """With Redis down the agent sockets stay open and keep reporting: the reports are stored, the
    dashboards miss the announcement, the flush ends normally (no task dies of it)."""
    from meshadmin.realtime import stats_buffer as sb

    class DownLayer:
        async def group_send(self, group, message):
            raise ConnectionError("redis is down")

    settings.SHADOWMESH_TELEMETRY_FLUSH_S = 0.01
    stored = []
    monkeypatch.setattr(sb, "_store",
                        lambda batch, acks: stored.append(acks) or [{"network": 1, "peer_id": "x"}])
    monkeypatch.setattr(sb, "database_sync_to_async", lambda f: (lambda *a: asyncio.sleep(0, f(*a))))
    monkeypatch.setattr(sb, "get_channel_layer", DownLayer)
    buf = sb.StatsBuffer()
    buf.ack(1, 5)
    flushing = buf.flushing
    await flushing  # raised ConnectionError before
    assert stored == [{1: 5}] and buf.flushing is None


@pytestmark_db
async def test_a_cancelled_agent_consumer_leaves_the_process_fanout(uk, belgium):
    """Daphne cancels an application instance that outlives its socket: the process must not go
    on handing it events."""
    uk_comm, _ = await login(uk[0])
    be_comm, _ = await login(belgium[0])
    network = await Network.objects.aget(name="default")
    fanout = process_fanout()
    assert len(fanout.members[groups.agents_group(network.pk)]) == 2
    uk_comm.future.cancel()
    await asyncio.sleep(0.05)
    assert len(fanout.members[groups.agents_group(network.pk)]) == 1
    assert groups.node_group(uk[0].peer_id) not in fanout.members
    await be_comm.disconnect()
