"""The session timer carrier (sessions.py) on a real data path and peer set: the facts it hands
each PeerSession and what it does with the events. The timer policy itself is tested in
protocol/test_session.py; the whole agent's timers in test_agent_netmap.py."""

from __future__ import annotations

import ipaddress
import secrets

import pytest

from nodeagent.config import PeerConfig
from nodeagent.peers import PeerSet
from nodeagent.protocol.constants import REJECT_AFTER_TIME_S, REKEY_AFTER_TIME_RECEIVING_S, REKEY_TIMEOUT_S
from nodeagent.protocol.keys import Keypair, Limits
from nodeagent.sessions import Sessions, session_timing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pc(name: str, n: int, via: str | None = None) -> PeerConfig:
    return PeerConfig(b"", secrets.token_hex(20), ipaddress.ip_address(f"10.10.10.{n}"), name, via=via)


class Box:
    """Sessions over a real PeerSet; the handshake side is two lists and a switch."""

    def __init__(self, make_datapath) -> None:
        self.clock = Clock()
        self.dp = make_datapath(clock=self.clock)
        self.peers = PeerSet(self.dp, 1000)
        self.requested: list[str] = []
        self.forgotten: list[str] = []
        self.path = False  # whether a HELLO can leave
        self.sessions = Sessions(self.peers, self.dp, limits=Limits(), keepalive_s=10.0,
                                 rekey_timeout_s=REKEY_TIMEOUT_S, jitter=lambda: 0.1, clock=self.clock,
                                 request_handshake=self._request, forget_handshake=self.forgotten.append)
        self.dp.on_handshake_needed = self.sessions.need_keys
        self.peers.listeners.append(self.sessions)

    def _request(self, peer) -> bool:
        self.requested.append(peer.config.name)
        return self.path

    def ticks(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = round(self.clock.now + 0.25, 6)
            self.sessions.tick(self.clock.now)


def test_session_timing_follows_a_lowered_rekey_time():
    assert session_timing(None) == (Limits(), REKEY_TIMEOUT_S)
    limits, retry = session_timing(2.0)
    assert retry == 1.0 and limits.rekey_after_time == 2.0
    assert limits.rekey_after_time_receiving == REKEY_AFTER_TIME_RECEIVING_S
    assert limits.reject_after_time == REJECT_AFTER_TIME_S
    assert session_timing(100.0)[1] == REKEY_TIMEOUT_S  # never slower than the protocol's


def test_an_unsent_attempt_starts_again_as_soon_as_the_hub_link_is_up(make_datapath):
    box = Box(make_datapath)
    hub = box.peers.add(pc("hub", 1))
    far = box.peers.add(pc("far", 2, via=hub.config.peer_id))
    far.hub = hub
    box.sessions.need_keys(far)
    assert box.requested == ["far"]  # could not leave: no link to the hub yet
    box.path = True
    box.sessions.hub_up(hub)
    assert box.requested == ["far", "far"]  # at once, not after the 5 s retry
    box.sessions.hub_up(far)  # far relays nobody: nothing starts
    assert box.requested == ["far", "far"]


def test_an_attempt_without_an_answer_is_forgotten_and_retried(make_datapath):
    box = Box(make_datapath)
    box.path = True
    uk = box.peers.add(pc("uk", 1))
    box.sessions.need_keys(uk)
    box.ticks(5.0)
    assert box.requested == ["uk"] and box.forgotten == []
    assert uk.stats.handshake_timeouts == 0
    box.ticks(0.25)  # REKEY_TIMEOUT + the 0.1 s jitter
    assert box.forgotten == [uk.config.peer_id] and box.requested == ["uk", "uk"]
    assert uk.stats.handshake_timeouts == 1 and uk.stats.handshake_give_ups == 0


def test_installed_keys_end_the_attempts(make_datapath):
    box = Box(make_datapath)
    box.path = True
    uk = box.peers.add(pc("uk", 1))
    box.sessions.need_keys(uk)
    kp = Keypair(bytes(32), bytes(32), local_index=3, remote_index=4, created_at=box.clock.now,
                 initiator=True)
    box.dp.install(uk, kp, confirmed=True)
    box.sessions.keys_installed(uk, box.clock.now)
    box.ticks(20.0)
    assert box.requested == ["uk"] and box.forgotten == []


def test_giving_up_drops_the_parked_packets(make_datapath):
    box = Box(make_datapath)
    uk = box.peers.add(pc("uk", 1))
    uk.pending.append(b"parked")
    box.sessions.need_keys(uk)
    box.ticks(89.0)
    assert uk.pending and uk.stats.handshake_give_ups == 0
    timeouts = uk.stats.handshake_timeouts
    assert timeouts >= 1  # retried every REKEY_TIMEOUT meanwhile
    box.ticks(6.0)
    assert not uk.pending and box.sessions.get(uk.config.peer_id).attempts == 0
    assert uk.stats.handshake_give_ups == 1 and uk.stats.handshake_timeouts > timeouts  # the last one too


@pytest.mark.parametrize("reset", [False, True])
def test_an_identity_change_starts_a_fresh_session(make_datapath, reset):
    box = Box(make_datapath)
    uk = box.peers.add(pc("uk", 1))
    box.sessions.need_keys(uk)
    before = box.sessions.get(uk.config.peer_id)
    box.peers.update(uk.config, reset_sessions=reset)
    assert (box.sessions.get(uk.config.peer_id) is before) is not reset
    box.peers.remove(uk.config.peer_id)
    assert box.sessions.get(uk.config.peer_id) is None
    box.sessions.need_keys(uk)  # the data path may still ask for a peer just removed
    assert box.requested == ["uk"]
