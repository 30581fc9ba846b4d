"""Key schedule: counters, lifetimes and the previous/current/next ring, on a fake clock."""

from __future__ import annotations

import threading

import pytest

from nodeagent.protocol import constants as C
from nodeagent.protocol.frames import FrameType, open_frame, parse_header, seal
from nodeagent.protocol.keys import DEFAULT_LIMITS, Keypair, KeyRing, KeysError, Limits, NonceExhausted

A = bytes([1]) * 32
B = bytes([2]) * 32
_index = iter(range(1, 10_000))


def pair(now=0.0, limits=DEFAULT_LIMITS, send=A, recv=B):
    """An initiator keypair and the matching responder keypair."""
    i, r = next(_index), next(_index)
    ini = Keypair(send, recv, local_index=i, remote_index=r, created_at=now, initiator=True, limits=limits)
    res = Keypair(recv, send, local_index=r, remote_index=i, created_at=now, initiator=False, limits=limits)
    return ini, res


def test_spec_constants_are_wireguards():
    assert C.REKEY_AFTER_MESSAGES == 2**60
    assert C.REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1
    assert (C.REKEY_AFTER_TIME_S, C.REJECT_AFTER_TIME_S, C.ZERO_AFTER_TIME_S) == (120, 180, 540)
    assert C.REKEY_AFTER_TIME_RECEIVING_S == 165
    assert (C.REKEY_TIMEOUT_S, C.REKEY_ATTEMPT_TIME_S, C.KEEPALIVE_TIMEOUT_S) == (5, 90, 10)


def test_counters_start_at_zero_and_never_repeat():
    ini, _ = pair()
    assert [ini.next_counter() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert ini.sent == 5


def test_frames_sealed_by_one_side_open_on_the_other():
    ini, res = pair()
    c = ini.next_counter()
    d = seal(ini.send, FrameType.DATA, ini.remote_index, c, 0, b"ping")
    h = parse_header(d)
    assert h.receiver_index == res.local_index
    assert open_frame(res.recv, h, d) == b"ping"
    assert res.accept(h.counter) is True
    assert res.accept(h.counter) is False


def test_sender_refuses_at_the_lowered_reject_limit():
    limits = Limits(rekey_after_messages=3, reject_after_messages=5)
    ini, _ = pair(limits=limits)
    got = [ini.next_counter() for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    with pytest.raises(NonceExhausted):
        ini.next_counter()
    assert not ini.usable(0.0)


def test_sender_wants_rekey_at_the_lowered_rekey_limit():
    limits = Limits(rekey_after_messages=3, reject_after_messages=5)
    ini, res = pair(limits=limits)
    for _ in range(2):
        ini.next_counter()
    assert not ini.wants_rekey_sending(0.0)
    ini.next_counter()
    assert ini.wants_rekey_sending(0.0)
    # the counter rule holds for the responder too (either side may start a handshake)
    for _ in range(3):
        res.next_counter()
    assert res.wants_rekey_sending(0.0)


def test_receiver_rejects_counters_at_the_lowered_limit():
    limits = Limits(rekey_after_messages=3, reject_after_messages=5)
    _, res = pair(limits=limits)
    assert res.accept(4)
    assert not res.accept(5)


def test_concurrent_senders_never_share_a_counter():
    ini, _ = pair()
    out: list[list[int]] = [[] for _ in range(8)]

    def work(slot):
        append = out[slot].append
        for _ in range(10_000):
            append(ini.next_counter())

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [c for chunk in out for c in chunk]
    assert len(everything) == 80_000
    assert len(set(everything)) == 80_000


def test_concurrent_senders_stop_exactly_at_the_reject_limit():
    ini, _ = pair(limits=Limits(rekey_after_messages=1000, reject_after_messages=5000))
    got: list[int] = []
    refused = []

    def work():
        for _ in range(1000):
            try:
                got.append(ini.next_counter())
            except NonceExhausted:
                refused.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(5000))
    assert len(refused) == 3000


# Numbered lifetime table: (case, initiator?, age s, usable, rekey on send, rekey on receive)
LIFETIME = [
    (1, True, 0, True, False, False),
    (2, True, 119.9, True, False, False),
    (3, True, 120, True, True, False),
    (4, True, 164.9, True, True, False),
    (5, True, 165, True, True, True),
    (6, True, 179.9, True, True, True),
    (7, True, 180, False, True, True),
    (8, False, 120, True, False, False),
    (9, False, 165, True, False, False),
    (10, False, 180, False, False, False),
]


@pytest.mark.parametrize(("case", "initiator", "age", "usable", "send", "recv"), LIFETIME)
def test_keypair_lifetime_follows_wireguard_timers(case, initiator, age, usable, send, recv):
    ini, res = pair(now=1000.0)
    kp = ini if initiator else res
    now = 1000.0 + age
    got = (kp.usable(now), kp.wants_rekey_sending(now), kp.wants_rekey_receiving(now))
    assert got == (usable, send, recv)


@pytest.mark.parametrize(("ends_in", "age", "usable"), [
    (None, 179.9, True),  # no end (a pinned key): the timers alone
    (30.0, 29.9, True),
    (30.0, 30.0, False),  # the certificate ended before the key lifetime
    (500.0, 180.0, False),  # the key lifetime ends first
])
def test_a_keypair_never_outlives_the_certificate_it_was_made_with(ends_in, age, usable):
    ini, _ = pair(now=1000.0)
    ini.ends_at = None if ends_in is None else 1000.0 + ends_in
    assert ini.usable(1000.0 + age) is usable


def test_wipe_zeroes_keys_and_stops_sending():
    ini, _ = pair()
    ini.wipe()
    assert ini.key_bytes() == (bytes(32), bytes(32))
    assert ini.send is None and ini.recv is None and ini.wiped
    with pytest.raises(NonceExhausted):
        ini.next_counter()
    assert not ini.usable(0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rekey_after_messages": 0},
        {"rekey_after_messages": 10, "reject_after_messages": 5},
        {"reject_after_messages": 2**64},
        {"rekey_after_time": 200},
        {"zero_after_time": 10},
    ],
)
def test_inconsistent_limits_are_refused(kwargs):
    with pytest.raises(KeysError):
        Limits(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"send_key": bytes(31)},
        {"recv_key": bytes(33)},
        {"local_index": -1},
        {"remote_index": 2**32},
    ],
)
def test_bad_keypair_arguments_are_refused(kwargs):
    args = {"send_key": A, "recv_key": B, "local_index": 1, "remote_index": 2}
    args.update(kwargs)
    with pytest.raises(KeysError):
        Keypair(args.pop("send_key"), args.pop("recv_key"), created_at=0, initiator=True, **args)


# --- the ring ----------------------------------------------------------------------------------


def test_first_keypair_is_current_for_both_roles():
    for confirmed in (True, False):
        ring = KeyRing()
        kp, _ = pair()
        ring.install(kp, confirmed=confirmed, now=0)
        assert ring.current is kp and ring.next is None
        assert ring.sending(0) is kp


def test_initiator_keeps_sending_on_current_until_the_responder_uses_next():
    ring = KeyRing()
    old, _ = pair(now=0)
    ring.install(old, confirmed=False, now=0)
    new, _ = pair(now=121)
    ring.install(new, confirmed=False, now=121)
    assert ring.next is new and ring.sending(121) is old
    assert ring.lookup(new.local_index) is new  # frames on next can be opened
    assert ring.received(new) is True
    assert (ring.previous, ring.current, ring.next) == (old, new, None)
    assert ring.sending(121.1) is new
    assert ring.received(new) is False


def test_responder_switches_at_once_and_keeps_previous_for_frames_in_flight():
    ring = KeyRing()
    _, old = pair(now=0)
    ring.install(old, confirmed=True, now=0)
    _, new = pair(now=121)
    ring.install(new, confirmed=True, now=121)
    assert ring.current is new and ring.previous is old
    assert ring.lookup(old.local_index) is old
    assert not old.wiped


def test_third_keypair_wipes_the_oldest():
    ring = KeyRing()
    kps = [pair(now=t)[1] for t in (0, 121, 242)]
    for kp, t in zip(kps, (0, 121, 242), strict=True):
        ring.install(kp, confirmed=True, now=t)
    assert kps[0].wiped and ring.lookup(kps[0].local_index) is None
    assert ring.previous is kps[1] and ring.current is kps[2]


def test_next_that_never_gets_a_frame_is_promoted_after_rekey_timeout():
    ring = KeyRing()
    old, _ = pair(now=0)
    ring.install(old, confirmed=False, now=0)
    new, _ = pair(now=130)
    ring.install(new, confirmed=False, now=130)
    ring.expire(134.9)
    assert ring.next is new
    ring.expire(135)
    assert ring.current is new and ring.previous is old


def test_next_is_used_when_current_expired():
    ring = KeyRing()
    old, _ = pair(now=0)
    ring.install(old, confirmed=False, now=0)
    new, _ = pair(now=179)
    ring.install(new, confirmed=False, now=179)
    assert ring.next is new
    assert ring.sending(180) is new
    assert ring.current is new


def test_replacing_a_pending_next_wipes_it():
    ring = KeyRing()
    cur, _ = pair(now=0)
    ring.install(cur, confirmed=False, now=0)
    n1, _ = pair(now=121)
    n2, _ = pair(now=126)
    ring.install(n1, confirmed=False, now=121)
    dropped = ring.install(n2, confirmed=False, now=126)
    assert dropped == [n1] and n1.wiped and ring.next is n2


def test_expire_wipes_keys_at_reject_after_time_and_empties_the_ring():
    ring = KeyRing()
    a = pair(now=0)[1]
    b = pair(now=100)[1]
    ring.install(a, confirmed=True, now=0)
    ring.install(b, confirmed=True, now=100)
    assert ring.next_expiry() == 180
    assert ring.expire(179.9) == []
    assert ring.expire(180) == [a] and a.wiped and ring.previous is None
    assert ring.sending(250) is b
    assert ring.sending(280) is None
    assert ring.expire(280) == [b] and b.wiped
    assert ring.keypairs() == [] and ring.next_expiry() is None


def test_wipe_all_clears_every_slot():
    ring = KeyRing()
    kps = [pair(now=t)[0] for t in (0, 1)]
    ring.install(kps[0], confirmed=False, now=0)
    ring.install(kps[1], confirmed=False, now=1)
    ring.wipe_all()
    assert all(k.wiped for k in kps) and ring.keypairs() == []


def test_forged_frame_with_huge_counter_never_moves_the_window():
    """The session's order is: parse, look up by index, open (tag), THEN the replay check."""
    ini, res = pair()
    for _ in range(3):
        c = ini.next_counter()
        d = seal(ini.send, FrameType.DATA, ini.remote_index, c, 0, b"x")
        h = parse_header(d)
        open_frame(res.recv, h, d)
        assert res.accept(h.counter)
    forged = bytearray(seal(ini.send, FrameType.DATA, ini.remote_index, 2**63, 0, b"x"))
    forged[-1] ^= 1
    accepted = receive(res, forged)
    assert accepted is None
    assert res.replay.last == 2
    c = ini.next_counter()
    assert receive(res, seal(ini.send, FrameType.DATA, ini.remote_index, c, 0, b"y")) == b"y"


def receive(kp, datagram):
    """Minimal receive pipeline in the required order."""
    from nodeagent.protocol.frames import FrameError

    try:
        h = parse_header(datagram)
        payload = open_frame(kp.recv, h, datagram)
    except FrameError:
        return None
    return payload if kp.accept(h.counter) else None
