"""The push histograms' bookkeeping (realtime/push_latency.py): one observation per agent frame, and
one per push and process for the last agent, closed when every socket of the network reported or
after the window."""

from __future__ import annotations

import asyncio

from meshadmin.realtime.push_latency import PushLatency


def tracker(loop=None) -> tuple[PushLatency, list[float], list[float]]:
    one: list[float] = []
    last: list[float] = []
    return PushLatency(loop, observe_one=one.append, observe_last=last.append), one, last


def test_the_last_agent_is_observed_once_every_socket_of_the_network_reported():
    t, one, last = tracker()
    for _ in range(3):
        t.joined(7)
    t.joined(8)  # another network's socket is not waited for
    t.handled(7, 5, 100.0, 100.4)
    t.handled(7, 5, 100.0, None)  # had it already (a resync): reports, sends nothing
    assert last == []
    t.handled(7, 5, 100.0, 100.9)
    assert [round(x, 3) for x in one] == [0.4, 0.9]
    assert [round(x, 3) for x in last] == [0.9]
    t.handled(7, 5, 100.0, 101.5)  # a straggler of a finished push changes nothing
    assert len(last) == 1 and len(one) == 2


def test_a_push_that_reached_nobody_observes_no_last_agent():
    t, one, last = tracker()
    t.joined(1)
    t.handled(1, 2, 50.0, None)
    assert one == [] and last == []


def test_an_event_without_its_change_time_is_not_measured():
    t, one, last = tracker()
    t.joined(1)
    t.handled(1, 2, None, 10.0)
    assert one == [] and last == [] and t.open == {}


def test_sockets_leaving_lower_what_the_next_push_waits_for():
    t, _, last = tracker()
    t.joined(1)
    t.joined(1)
    t.left(1)
    t.handled(1, 9, 10.0, 10.2)
    assert [round(x, 3) for x in last] == [0.2]
    t.left(1)
    assert t.sockets == {}


async def test_a_socket_that_never_reports_closes_the_push_after_the_window(monkeypatch):
    monkeypatch.setattr("meshadmin.realtime.push_latency.WINDOW_S", 0.05)
    t, _, last = tracker(asyncio.get_running_loop())
    t.joined(1)
    t.joined(1)
    t.handled(1, 3, 10.0, 10.25)  # the other socket closed before the event reached it
    assert last == []
    await asyncio.sleep(0.2)
    assert [round(x, 3) for x in last] == [0.25] and t.open == {}
