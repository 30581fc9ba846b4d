"""The HELLO replay and flood guard on its own: timestamps against the last authenticated HELLO,
the future-skew bound, clock jumps, the flood interval, and that only authenticated HELLOs leave
state behind.

test_handshake.py checks that the Responder checks the guard before the HELLO's signature and
records the HELLO only once the signature verified.
"""

from __future__ import annotations

import threading

import pytest

from nodeagent.protocol.handshake_errors import HandshakeFlood, ReplayedHello
from nodeagent.protocol.hello_guard import HELLO_MAX_FUTURE_S, HelloGuard

NOW = 1_800_000_000
NOW_MS = NOW * 1000
A, B = "a" * 40, "b" * 40


def test_a_hello_up_to_the_future_bound_passes_and_beyond_it_is_refused():
    HelloGuard().check(A, NOW_MS + HELLO_MAX_FUTURE_S * 1000, NOW)
    with pytest.raises(ReplayedHello):
        HelloGuard().check(A, NOW_MS + HELLO_MAX_FUTURE_S * 1000 + 1, NOW)
    with pytest.raises(ReplayedHello):
        HelloGuard().accept(A, NOW_MS + HELLO_MAX_FUTURE_S * 1000 + 1, NOW)


def test_after_an_authenticated_hello_only_newer_hellos_pass():
    guard = HelloGuard()
    guard.accept(A, NOW_MS, NOW)
    for ts in (NOW_MS, NOW_MS - 1):
        with pytest.raises(ReplayedHello):
            guard.check(A, ts, NOW + 1)
        with pytest.raises(ReplayedHello):
            guard.accept(A, ts, NOW + 1)
    guard.check(A, NOW_MS + 1, NOW + 1)
    guard.check(B, NOW_MS - 1, NOW + 1)  # another peer has its own record


def test_check_changes_nothing():
    guard = HelloGuard()
    guard.check(A, NOW_MS, NOW)
    guard.check(A, NOW_MS, NOW)  # neither a replay nor a flood: nothing was recorded
    assert len(guard) == 0


def test_a_record_only_moves_forward():
    guard = HelloGuard()
    guard.accept(A, NOW_MS, NOW)
    with pytest.raises(ReplayedHello):
        guard.accept(A, NOW_MS - 5000, NOW + 1)
    with pytest.raises(ReplayedHello):
        guard.check(A, NOW_MS - 1, NOW + 1)


def test_a_record_far_ahead_of_our_clock_is_stale():
    """Our clock went back: a record beyond the future bound no longer blocks the peer."""
    guard = HelloGuard()
    year = 365 * 86400
    guard.accept(A, (NOW + year) * 1000, NOW + year)
    guard.check(A, NOW_MS, NOW)
    guard.accept(A, NOW_MS, NOW)


def test_hellos_closer_than_the_interval_are_a_flood_and_refusals_do_not_extend_it():
    guard = HelloGuard()
    guard.accept(A, NOW_MS, NOW)
    with pytest.raises(HandshakeFlood):
        guard.check(A, NOW_MS + 10, NOW + 0.010)
    with pytest.raises(HandshakeFlood):
        guard.accept(A, NOW_MS + 10, NOW + 0.010)
    guard.accept(B, NOW_MS + 10, NOW + 0.010)  # per peer
    guard.accept(A, NOW_MS + 21, NOW + 0.021)  # measured from the last accepted one


def test_a_clock_that_went_back_is_not_a_flood():
    guard = HelloGuard()
    guard.accept(A, NOW_MS, NOW)
    guard.accept(A, NOW_MS + 1, NOW - 60)


def test_forget_drops_the_record():
    guard = HelloGuard()
    guard.accept(A, NOW_MS, NOW)
    guard.forget(A)
    guard.accept(A, NOW_MS, NOW + 0.001)


def test_state_grows_only_with_authenticated_peers():
    """Claimed ids are checked, never remembered: only `accept` (after the signature) writes."""
    guard = HelloGuard()
    for k in range(1000):
        guard.check(f"{k:040x}", NOW_MS, NOW)
    assert len(guard) == 0
    guard.accept(A, NOW_MS, NOW)
    assert len(guard) == 1


def test_concurrent_accepts_of_one_hello_let_exactly_one_through():
    """Two worker threads verify copies of the same HELLO at once: one records it, the other is a
    replay (the check and the record are one step)."""
    for _ in range(50):
        guard = HelloGuard()
        outcomes: list[str] = []
        start = threading.Barrier(4)

        def accept(guard=guard, outcomes=outcomes, start=start):
            start.wait()
            try:
                guard.accept(A, NOW_MS, NOW)
                outcomes.append("accepted")
            except (ReplayedHello, HandshakeFlood):
                outcomes.append("refused")

        threads = [threading.Thread(target=accept) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["accepted", "refused", "refused", "refused"]
