"""The DHT port's cap on connections per source counts what the request budgets count as one
source (ratelimit.source_key): an IPv4 address, an IPv6 /64, an IPv4-mapped address as its IPv4
address. Counted by the raw address, one subscriber's /64 holds 2**64 addresses, each with a cap
of its own. Driven in process through DhtServer.serve with stream pairs whose peer name is set:
the loopback of this host has no IPv6 /64 to connect from."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from nodeagent.discovery.budget import SourceBudgets
from nodeagent.discovery.config import DhtConfig, DhtStats
from nodeagent.discovery.messages import Error, Request
from nodeagent.discovery.server import DhtServer

CAP = 2


@dataclass
class Host:
    config: DhtConfig = field(default_factory=lambda: DhtConfig(
        allow_loopback=True, max_connections_per_source=CAP, first_frame_s=30, idle_s=30))
    stats: DhtStats = field(default_factory=DhtStats)
    budgets: SourceBudgets = field(default_factory=lambda: SourceBudgets(100.0, 100.0))

    def answer(self, msg: Request):
        return Error(msg.rid, "unused", "not asked in these tests")


class Writer:
    """The side of a StreamWriter that DhtServer.serve uses, with a peer name of our choosing."""

    def __init__(self, peer: tuple) -> None:
        self.peer = peer
        self.closed = False

    def get_extra_info(self, name: str):
        return self.peer if name == "peername" else None

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        pass


async def _open(server: DhtServer, peers: list[tuple]) -> tuple[list, list[Writer], list[asyncio.Task]]:
    """One connection per peer name, each left open (no frame sent); returns once each has been
    admitted (waiting for its first frame) or refused (closed at once)."""
    readers, writers, tasks = [], [], []
    for peer in peers:
        reader, writer = asyncio.StreamReader(), Writer(peer)
        readers.append(reader)
        writers.append(writer)
        tasks.append(asyncio.create_task(server.serve(reader, writer)))  # type: ignore[arg-type]
        for _ in range(3):
            await asyncio.sleep(0)
    return readers, writers, tasks


async def _end(readers, tasks) -> None:
    for reader in readers:
        reader.feed_eof()
    await asyncio.gather(*tasks)


V6 = lambda ip: (ip, 9443, 0, 0)  # noqa: E731  (an AF_INET6 peer name)
V4 = lambda ip: (ip, 9443)  # noqa: E731


@pytest.mark.parametrize("peers", [
    # three addresses of one IPv6 /64
    [V6("2001:db8:1:2::a"), V6("2001:db8:1:2::b"), V6("2001:db8:1:2:ffff:ffff:ffff:ffff")],
    # an IPv4 address, and the same address as a dual-stack socket reports it
    [V4("198.18.0.7"), V6("::ffff:198.18.0.7"), V4("198.18.0.7")],
    # a link-local /64 with zones
    [V6("fe80::1%eth0"), V6("fe80::2%eth1"), V6("fe80::3")],
], ids=["ipv6-/64", "ipv4-mapped", "link-local"])
async def test_addresses_of_one_source_share_its_connection_cap(peers):
    host = Host()
    server = DhtServer(host)
    readers, writers, tasks = await _open(server, peers)
    assert [w.closed for w in writers] == [False] * CAP + [True]
    assert host.stats.refused == {"connections": 1}
    await _end(readers, tasks)
    assert server._conns_by_source == {} and server._conns_total == 0


async def test_other_sources_are_not_affected_and_a_closed_connection_gives_its_place_back():
    host = Host()
    server = DhtServer(host)
    full = [V6("2001:db8:1:2::a"), V6("2001:db8:1:2::b")]
    others = [V6("2001:db8:1:3::a"), V4("198.18.0.7"), V4("198.18.0.8")]
    readers, writers, tasks = await _open(server, full + others)
    assert not any(w.closed for w in writers)
    assert host.stats.refused == {}
    readers[0].feed_eof()  # one of the /64's connections ends
    await tasks[0]
    more_readers, more_writers, more_tasks = await _open(server, [V6("2001:db8:1:2::c")])
    assert not more_writers[0].closed
    await _end(readers[1:] + more_readers, tasks[1:] + more_tasks)
    assert server._conns_by_source == {} and server._conns_total == 0


async def test_a_peer_name_that_is_not_an_address_is_a_source_of_its_own():
    host = Host()
    server = DhtServer(host)
    readers, writers, tasks = await _open(server, [("not an address", 1)] * (CAP + 1))
    assert [w.closed for w in writers] == [False] * CAP + [True]
    await _end(readers, tasks)
    assert server._conns_by_source == {}
