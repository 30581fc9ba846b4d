"""Per-peer timers on a fake clock: handshake retry/give-up, rekey, keepalive, no-reply, expiry.
The last test drives two sessions with real handshakes and frames for ten simulated minutes."""

from __future__ import annotations

import pytest

from nodeagent.protocol.events import (
    HandshakeGaveUp,
    HandshakeReason,
    HandshakeTimedOut,
    KeysExpired,
    SendKeepalive,
    StartHandshake,
)
from nodeagent.protocol.frames import FrameType, open_frame, parse_header, seal
from nodeagent.protocol.handshake import Initiator, Responder
from nodeagent.protocol.keys import Keypair
from nodeagent.protocol.session import PeerSession
from nodeagent.protocol.trust import LocalIdentity, PinnedKeys

PEER = "ab" * 20
_idx = iter(range(1, 100_000))


def keypair(initiator=True, now=0.0):
    return Keypair(bytes([1]) * 32, bytes([2]) * 32, local_index=next(_idx), remote_index=next(_idx),
                   created_at=now, initiator=initiator)


def starts(events):
    return [(e.reason, e.attempt) for e in events if isinstance(e, StartHandshake)]


def test_need_keys_starts_one_attempt_and_not_a_second_while_it_runs():
    s = PeerSession(PEER)
    assert starts(s.need_keys(0.0)) == [(HandshakeReason.NO_KEYS, 1)]
    assert s.need_keys(1.0) == [] and s.handshaking
    assert s.next_deadline() == 5.0


def test_unanswered_attempts_retry_every_5_s_and_give_up_after_90_s():
    s = PeerSession(PEER)
    s.need_keys(0.0)
    log = []
    now = 0.0
    while s.next_deadline() is not None:
        now = s.next_deadline()
        log.append((now, s.handle_timer(now)))
    times = [t for t, _ in log]
    assert times == [5.0 * k for k in range(1, 19)]
    assert all(isinstance(ev[0], HandshakeTimedOut) for _, ev in log)
    assert [starts(ev) for _, ev in log[:-1]] == [[(HandshakeReason.RETRY, k)] for k in range(2, 19)]
    assert log[-1][1][-1] == HandshakeGaveUp(PEER, 18)
    assert not s.handshaking and s.next_deadline() is None  # silence until new demand
    assert starts(s.need_keys(200.0)) == [(HandshakeReason.NO_KEYS, 1)]


def test_retry_waits_for_the_jitter_passed_in():
    s = PeerSession(PEER, jitter=lambda: 0.25)
    s.need_keys(10.0)
    assert s.next_deadline() == 15.25
    assert s.handle_timer(15.2) == []
    assert starts(s.handle_timer(15.25)) == [(HandshakeReason.RETRY, 2)]


def test_failed_attempt_is_retried_no_earlier_than_the_rate_limit():
    s = PeerSession(PEER)
    s.need_keys(0.0)
    s.handshake_failed(0.1)
    assert s.handle_timer(1.0) == [] and s.next_deadline() == 5.0


def test_completed_handshake_installs_keys_and_ends_the_series():
    s = PeerSession(PEER)
    s.need_keys(0.0)
    kp = keypair()
    s.handshake_completed(0.5, kp, confirmed=False)
    assert s.ring.current is kp and not s.handshaking and s.attempts == 0
    assert s.last_handshake == 0.5 and kp.created_at == 0.5


def test_demand_right_after_a_handshake_waits_for_the_rate_limit():
    s = PeerSession(PEER)
    s.need_keys(0.0)
    s.handshake_completed(0.5, keypair(), confirmed=False)
    assert s.need_keys(2.0, HandshakeReason.REKEY) == []
    assert s.next_deadline() == 5.0
    assert starts(s.handle_timer(5.0)) == [(HandshakeReason.REKEY, 1)]


def test_initiator_rekeys_at_120_s_and_responder_does_not():
    ini, res = PeerSession(PEER), PeerSession(PEER)
    ini.handshake_completed(0.0, keypair(initiator=True), confirmed=False)
    res.handshake_completed(0.0, keypair(initiator=False), confirmed=True)
    for s in (ini, res):
        s.on_sent(119.0)
    assert starts(ini.handle_timer(119.9)) == []
    assert starts(ini.handle_timer(120.0)) == [(HandshakeReason.REKEY, 1)]
    assert starts(res.handle_timer(120.0)) == []


def test_keepalive_after_10_s_without_sending():
    s = PeerSession(PEER)
    s.handshake_completed(0.0, keypair(), confirmed=True)
    assert s.next_deadline() == 10.0
    s.on_sent(4.0)
    assert s.handle_timer(10.0) == [] and s.next_deadline() == 14.0
    assert s.handle_timer(14.0) == [SendKeepalive(PEER)]
    assert s.next_deadline() == 24.0


def test_no_keepalive_without_keys():
    s = PeerSession(PEER)
    assert s.next_deadline() is None and s.handle_timer(100.0) == []


def test_data_without_reply_for_15_s_starts_a_handshake():
    s = PeerSession(PEER)
    s.handshake_completed(0.0, keypair(initiator=False), confirmed=True)
    s.on_data_sent(1.0)
    s.on_data_sent(3.0)  # the first unanswered send arms the check
    assert starts(s.handle_timer(15.9)) == []
    assert starts(s.handle_timer(16.0)) == [(HandshakeReason.NO_REPLY, 1)]


def test_reply_disarms_the_no_reply_check():
    s = PeerSession(PEER)
    s.handshake_completed(0.0, keypair(initiator=False), confirmed=True)
    s.on_data_sent(1.0)
    s.on_received(2.0)
    s.on_sent(16.0)
    assert starts(s.handle_timer(16.0)) == []


def test_rekey_demand_is_ignored_while_a_fresh_keypair_waits_in_next():
    s = PeerSession(PEER)
    s.handshake_completed(0.0, keypair(), confirmed=False)
    s.handshake_completed(120.0, keypair(), confirmed=False)
    assert s.ring.next is not None
    assert s.need_keys(126.0, HandshakeReason.REKEY) == []
    assert starts(s.need_keys(126.0, HandshakeReason.NO_KEYS)) == [(HandshakeReason.NO_KEYS, 1)]


def test_counter_based_rekey_with_lowered_limits():
    from nodeagent.protocol.keys import Limits

    limits = Limits(rekey_after_messages=3, reject_after_messages=5)
    s = PeerSession(PEER, limits=limits)
    kp = Keypair(bytes(32), bytes([1]) * 32, local_index=1, remote_index=2, created_at=0, initiator=False,
                 limits=limits)
    s.handshake_completed(0.0, kp, confirmed=True)
    for _ in range(3):
        kp.next_counter()
    assert kp.wants_rekey_sending(1.0)
    assert starts(s.need_keys(6.0, HandshakeReason.REKEY)) == [(HandshakeReason.REKEY, 1)]
    kp.next_counter()
    kp.next_counter()
    assert s.ring.sending(6.5) is None  # at the reject limit nothing is sent


def test_unrefreshed_keys_expire_at_180_s():
    s = PeerSession(PEER)
    kp = keypair(initiator=False)
    s.handshake_completed(0.0, kp, confirmed=True)
    s.on_sent(175.0)
    events = s.handle_timer(180.0)
    assert KeysExpired(PEER, (kp,)) in events and kp.wiped
    assert s.ring.current is None and s.next_deadline() is None


@pytest.mark.parametrize("step", [0.5, 1.7])
def test_two_peers_keep_a_working_session_for_ten_minutes(belgium, starlink, step):
    """Fake clock; handshakes are real; every step each side sends a frame the other must open."""
    ids = {"b": LocalIdentity.pinned(belgium.key), "s": LocalIdentity.pinned(starlink.key)}
    trust = {"b": PinnedKeys([starlink.public_key]), "s": PinnedKeys([belgium.public_key])}
    other = {"b": "s", "s": "b"}
    sessions = {k: PeerSession(other[k]) for k in "bs"}
    wall = 1_800_000_000
    handshakes = delivered = 0

    def handshake(initiator_side, now):
        nonlocal handshakes
        a, b = initiator_side, other[initiator_side]
        ini = Initiator(ids[a], trust[a], ids[b].peer_id, wall + now)
        res = Responder(ids[b], trust[b], wall + now)
        res.consume_hello(ini.create_hello(), wall + now)
        ini.consume_challenge(res.create_challenge(), wall + now)
        rr = res.consume_confirm(ini.create_confirm(), wall + now)
        sessions[b].handshake_completed(now, rr.keypair, confirmed=True)
        sessions[a].handshake_completed(now, ini.result.keypair, confirmed=False)
        handshakes += 1

    def send(side, now, payload):
        nonlocal delivered
        s, r = sessions[side], sessions[other[side]]
        kp = s.ring.sending(now)
        if kp is None or kp.wants_rekey_sending(now):
            for _ev in s.need_keys(now, HandshakeReason.NO_KEYS if kp is None else HandshakeReason.REKEY):
                handshake(side, now)
            kp = s.ring.sending(now)
        assert kp is not None, f"{side} has no keys at {now}"
        d = seal(kp.send, FrameType.DATA, kp.remote_index, kp.next_counter(), 0, payload)
        s.on_data_sent(now)
        h = parse_header(d)
        rkp = r.ring.lookup(h.receiver_index)
        assert rkp is not None, f"frame from {side} at {now} for an unknown index"
        assert open_frame(rkp.recv, h, d) == payload and rkp.accept(h.counter)
        r.ring.received(rkp)
        r.on_received(now)
        delivered += 1

    now = 0.0
    while now < 600:
        for side in "bs":
            for ev in sessions[side].handle_timer(now):
                if isinstance(ev, StartHandshake):
                    handshake(side, now)
        send("b", now, b"ping %f" % now)
        send("s", now, b"pong %f" % now)
        now += step
    assert delivered == 2 * len([1 for _ in range(int(600 / step) + (600 % step > 0))])
    assert handshakes == 5  # one at start, then one per 120 s, never a duplicate


def test_keys_installed_by_the_io_side_end_the_attempt_series():
    s = PeerSession(PEER)
    s.need_keys(0.0)
    kp = keypair()
    s.ring.install(kp, confirmed=True, now=0.5)  # the data path installs into the shared ring
    s.keys_installed(0.5)
    assert s.ring.current is kp and not s.handshaking and s.attempts == 0 and s.last_handshake == 0.5
    assert s.handle_timer(5.0) == []  # no retry of the finished attempt


def test_an_unsent_attempt_starts_again_when_a_path_appears():
    s = PeerSession(PEER, jitter=lambda: 0.1)
    assert starts(s.need_keys(0.0)) == [(HandshakeReason.NO_KEYS, 1)]
    s.handshake_unsent(0.0)
    assert starts(s.path_up(2.0)) == [(HandshakeReason.RETRY, 2)]
    assert s.next_deadline() == 7.1  # the new attempt has its own timeout
    assert s.path_up(3.0) == []  # that one left: a second path_up does not repeat it


def test_path_up_does_nothing_without_an_unsent_attempt():
    s = PeerSession(PEER)
    assert s.path_up(1.0) == []
    s.need_keys(2.0)
    assert s.path_up(3.0) == [] and s.attempts == 1


def test_unsent_attempts_still_give_up_after_90_s():
    s = PeerSession(PEER)
    s.need_keys(0.0)
    s.handshake_unsent(0.0)
    now, gave_up = 0.0, []
    while s.next_deadline() is not None:
        now = s.next_deadline()
        for ev in s.handle_timer(now):
            if isinstance(ev, StartHandshake):
                s.handshake_unsent(now)
            elif isinstance(ev, HandshakeGaveUp):
                gave_up.append(now)
    assert gave_up == [90.0] and not s.handshaking


def test_no_reply_waits_for_a_keepalive_interval_longer_than_10_s():
    s = PeerSession(PEER, keepalive_s=30.0)
    s.handshake_completed(0.0, keypair(initiator=False), confirmed=True)
    s.on_data_sent(1.0)
    assert starts(s.handle_timer(16.0)) == []
    assert starts(s.handle_timer(36.0)) == [(HandshakeReason.NO_REPLY, 1)]
