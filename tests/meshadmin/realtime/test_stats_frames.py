"""Counter reports on /ws/agent/ cost the server no decoding unless they will be used, and no
frame larger than any valid one of its type is decoded, before the login or after it.

The attack (issue 9): an authenticated agent sends stats frames as fast as it can, each up to the
1 MiB frame limit. The server stores at most one report per MIN_STATS_INTERVAL_S, so every frame
inside that window, and every frame listing more peers than the network has, must be dropped
before it is decoded. Decodes are counted, not timed: each test wraps the decoder the consumer
calls and records the type of every frame it decoded.
"""

from __future__ import annotations

import secrets

import pytest

from meshadmin.realtime import consumers
from meshadmin.realtime.stats_buffer import stats_buffer
from meshadmin.telemetry.models import Sample
from nodeagent.protocol import messages
from nodeagent.protocol.constants import CloseCode
from nodeagent.protocol.counters import PeerCounters
from tests.meshadmin.realtime.realtime_helpers import close_code, login, open_socket, receive

pytestmark = pytest.mark.django_db(transaction=True)


def report(uptime: float, peer_ids: list[str]) -> bytes:
    return messages.encode(messages.Stats(uptime, tuple(
        PeerCounters(pid, "direct", rtt_ms=1.0, tx_bytes=1000, rx_bytes=1000, tx_frames=10, rx_frames=10)
        for pid in peer_ids)))


def largest_report(uptime: float = 1.0) -> bytes:
    """A valid stats frame just under the 1 MiB frame limit (thousands of made-up peers)."""
    one = len(report(uptime, ["0" * 40]))
    per_peer = len(report(uptime, ["0" * 40] * 2)) - one
    count = (messages.MAX_MESSAGE_SIZE - one) // per_peer
    frame = report(uptime, [secrets.token_hex(20) for _ in range(count)])
    assert 0.99 * messages.MAX_MESSAGE_SIZE < len(frame) <= messages.MAX_MESSAGE_SIZE
    return frame


@pytest.fixture
def decoded(monkeypatch):
    """The type of every frame the agent consumer decoded, in order ('error' when it raised)."""
    seen: list[str] = []
    real = messages.decode_agent_message

    def counting(data):
        try:
            msg = real(data)
        except messages.MessageError:
            seen.append("error")
            raise
        seen.append(type(msg).__name__)
        return msg

    monkeypatch.setattr(messages, "decode_agent_message", counting)
    return seen


async def settle(comm) -> None:
    """Every frame sent before this one has been handled: the consumer handles frames in order
    and answers a resync with the full map."""
    await comm.send_to(bytes_data=messages.encode(messages.Resync(0)))
    assert isinstance(await receive(comm), messages.Full)


async def test_stats_frames_inside_the_throttle_window_are_dropped_without_decoding(
        uk, belgium, decoded, monkeypatch):
    # a window no test machine can outrun, so the count does not depend on speed
    monkeypatch.setattr(consumers, "MIN_STATS_INTERVAL_S", 3600.0)
    comm, _ = await login(belgium[0])
    await comm.send_to(bytes_data=report(1.0, [uk[0].peer_id]))
    burst = largest_report(2.0)
    for _ in range(10):
        await comm.send_to(bytes_data=burst)
    await settle(comm)
    assert decoded == ["Auth", "Stats", "Resync"], "only the first report of the window is decoded"
    assert len(stats_buffer().pending) == 1
    await comm.disconnect()


async def test_a_report_larger_than_the_network_can_need_is_dropped_without_decoding(
        uk, belgium, decoded, monkeypatch):
    monkeypatch.setattr(consumers, "MIN_STATS_INTERVAL_S", 0.0)
    comm, _ = await login(belgium[0])
    for uptime in (1.0, 2.0, 3.0):
        await comm.send_to(bytes_data=largest_report(uptime))
    await settle(comm)
    assert decoded == ["Auth", "Resync"]
    assert stats_buffer().pending == []
    # an honest report of the same socket is still taken
    await comm.send_to(bytes_data=report(4.0, [uk[0].peer_id]))
    await settle(comm)
    assert decoded == ["Auth", "Resync", "Stats", "Resync"]
    assert len(stats_buffer().pending) == 1
    await comm.disconnect()


async def test_a_report_with_more_peers_than_the_cap_in_a_small_frame_is_decoded_once_and_dropped(
        uk, belgium, decoded, monkeypatch):
    """Peer entries smaller than the worst case pass the size check; the count check after the
    decode drops the report, and that decode still opens the throttle window."""
    monkeypatch.setattr(consumers, "MIN_STATS_INTERVAL_S", 3600.0)
    comm, netmap = await login(belgium[0])
    cap = consumers.STATS_PEER_SLACK + len(netmap.peers) + 1  # the network: this node and its peers
    too_many = messages.encode(messages.Stats(1.0, tuple(
        PeerCounters(secrets.token_hex(20)) for _ in range(cap + 1))))
    assert len(too_many) <= messages.max_stats_size(cap)
    await comm.send_to(bytes_data=too_many)
    await comm.send_to(bytes_data=too_many)
    await settle(comm)
    assert decoded == ["Auth", "Stats", "Resync"]
    assert stats_buffer().pending == []
    assert await Sample.objects.acount() == 0
    await comm.disconnect()


def padded(t: str, size: int) -> bytes:
    """A frame of type `t` of `size` bytes: its head, then bytes that are not even msgpack."""
    head = messages.encode({"auth": messages.Auth("0" * 40, b"s"), "endpoints": messages.EndpointReport(()),
                            "stats": messages.Stats(1.0, ())}[t])
    return head + bytes(size - len(head))


@pytest.mark.parametrize(("frame", "code"), [("largest stats", CloseCode.AUTH_FAILED),
                                             ("large endpoints", CloseCode.TOO_LARGE)])
async def test_before_the_login_no_large_frame_is_decoded(frame, code, decoded):
    """Refused from the frame's head: a report before the login as not authenticated, a frame
    larger than any of its type as too large."""
    data = {"largest stats": largest_report(),
            "large endpoints": padded("endpoints", messages.MAX_MESSAGE_SIZE)}[frame]
    comm = await open_socket()
    assert isinstance(await receive(comm), messages.Challenge)
    await comm.send_to(bytes_data=data)
    assert await close_code(comm) == code
    assert decoded == []


async def test_an_auth_frame_larger_than_any_valid_one_is_refused_undecoded(decoded):
    comm = await open_socket()
    assert isinstance(await receive(comm), messages.Challenge)
    await comm.send_to(bytes_data=padded("auth", messages.MAX_MESSAGE_SIZE))
    assert await close_code(comm) == CloseCode.TOO_LARGE
    assert decoded == []


async def test_a_frame_larger_than_any_valid_one_of_its_type_is_refused_undecoded(belgium, decoded):
    comm, _ = await login(belgium[0])
    await comm.send_to(bytes_data=padded("endpoints", messages.agent_frame_limit("endpoints") + 1))
    assert await close_code(comm) == CloseCode.TOO_LARGE
    assert decoded == ["Auth"]
