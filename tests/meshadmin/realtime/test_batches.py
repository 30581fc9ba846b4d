"""realtime/batches.py: what sockets submit while a hop runs goes in the next hop, and each
caller gets its own result."""

from __future__ import annotations

import asyncio
import threading

import pytest

from meshadmin.realtime.batches import Batch

# a hop runs through database_sync_to_async, which first closes the database thread's stale
# connections: that is database access when an earlier test of the process left one there
pytestmark = pytest.mark.django_db


class Recorder:
    """run_many that records each hop's items, doubles numbers, and refuses negative ones; it
    holds each hop until `release` is set, so the test decides when a hop ends."""

    def __init__(self) -> None:
        self.hops: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list:
        self.hops.append(list(items))
        self.release.wait(5)
        return [ValueError(f"negative {i}") if i < 0 else 2 * i for i in items]


async def first_hop_running(run: Recorder) -> None:
    """Until the first hop is on the database thread (and held there by `run`)."""
    for _ in range(500):
        if run.hops:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first hop never reached the database thread")


async def test_a_lone_submission_goes_at_once_and_alone():
    run = Recorder()
    run.release.set()
    assert await Batch(run)(21) == 42
    assert run.hops == [[21]]


async def test_what_comes_while_a_hop_runs_goes_in_the_next_hop_together():
    run = Recorder()
    batch = Batch(run)
    first = asyncio.ensure_future(batch(1))
    await first_hop_running(run)
    rest = [asyncio.ensure_future(batch(i)) for i in range(2, 7)]
    await asyncio.sleep(0.05)
    run.release.set()
    assert await first == 2 and await asyncio.gather(*rest) == [4, 6, 8, 10, 12]
    assert run.hops == [[1], [2, 3, 4, 5, 6]] and batch.hops == 2


async def test_a_hop_takes_at_most_its_limit():
    run = Recorder()
    batch = Batch(run, limit=2)
    blocker = asyncio.ensure_future(batch(0))
    await first_hop_running(run)
    rest = [asyncio.ensure_future(batch(i)) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    run.release.set()
    await asyncio.gather(blocker, *rest)
    assert run.hops == [[0], [1, 2], [3, 4], [5]]


async def test_an_item_refused_raises_for_its_caller_only():
    run = Recorder()
    batch = Batch(run)
    blocker = asyncio.ensure_future(batch(0))
    await first_hop_running(run)
    good, bad = asyncio.ensure_future(batch(5)), asyncio.ensure_future(batch(-1))
    await asyncio.sleep(0.05)
    run.release.set()
    await blocker
    assert await good == 10
    with pytest.raises(ValueError, match="negative -1"):
        await bad


async def test_a_hop_that_fails_fails_each_of_its_callers_and_the_next_hop_runs():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("database gone")
        return [i + 1 for i in items]

    batch = Batch(flaky)
    with pytest.raises(RuntimeError, match="database gone"):
        await batch(1)
    assert await batch(2) == 3  # the batch is not stuck after a failure


async def test_a_caller_that_gives_up_does_not_disturb_the_others():
    run = Recorder()
    batch = Batch(run)
    blocker = asyncio.ensure_future(batch(0))
    await first_hop_running(run)
    gone, kept = asyncio.ensure_future(batch(1)), asyncio.ensure_future(batch(2))
    await asyncio.sleep(0.01)
    gone.cancel()  # its socket closed while it waited
    run.release.set()
    assert await blocker == 0 and await kept == 4
    assert gone.cancelled()


async def test_a_wrong_number_of_results_is_an_error_for_every_caller():
    batch = Batch(lambda items: [1])
    results = await asyncio.gather(batch(1), batch(2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results), results


def test_presence_counts_of_one_hop_are_each_counted_on_their_own(belgium, uk):
    """The login's second hop for many sockets at once (consumers._came_online): two sockets of
    one node in the same hop count two connections, and only the first brings the node online;
    each gets its network's serial."""
    from meshadmin.mesh.models import Network, Node
    from meshadmin.realtime import auth
    from meshadmin.realtime.consumers import _came_online
    from meshadmin.telemetry.models import Presence

    nodes = {n.peer_id: n for n in Node.objects.filter(peer_id__in=[belgium[0].peer_id, uk[0].peer_id])}
    b, u = (auth._identity(nodes[i[0].peer_id]) for i in (belgium, uk))
    serial = Network.objects.get(pk=b.network_id).serial
    assert _came_online([b, u, b]) == [(True, serial), (True, serial), (False, serial)]
    assert Presence.objects.get(node_id=b.pk).connections == 2
    assert Presence.objects.get(node_id=u.pk).connections == 1
