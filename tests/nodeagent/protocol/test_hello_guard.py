"""The HELLO replay and flood guard on its own: timestamps against the last completed handshake,
the future-skew bound, clock jumps, the flood interval and its bounded memory.

test_handshake.py checks that the Responder asks the guard on HELLO and records only after CONFIRM.
"""

from __future__ import annotations

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


def test_after_a_completed_handshake_only_newer_hellos_pass():
    guard = HelloGuard()
    guard.record(A, NOW_MS)
    for ts in (NOW_MS, NOW_MS - 1):
        with pytest.raises(ReplayedHello):
            guard.check(A, ts, NOW + 1)
    guard.check(A, NOW_MS + 1, NOW + 1)
    guard.check(B, NOW_MS - 1, NOW + 1)  # another peer has its own record


def test_a_record_only_moves_forward():
    guard = HelloGuard()
    guard.record(A, NOW_MS)
    guard.record(A, NOW_MS - 5000)
    with pytest.raises(ReplayedHello):
        guard.check(A, NOW_MS - 1, NOW + 1)


def test_a_record_far_ahead_of_our_clock_is_stale():
    """Our clock went back: a record beyond the future bound no longer blocks the peer."""
    guard = HelloGuard()
    guard.record(A, NOW_MS + 365 * 86400 * 1000)
    guard.check(A, NOW_MS, NOW)


def test_hellos_closer_than_the_interval_are_a_flood_and_refusals_do_not_extend_it():
    guard = HelloGuard()
    guard.check(A, NOW_MS, NOW)
    with pytest.raises(HandshakeFlood):
        guard.check(A, NOW_MS + 10, NOW + 0.010)
    guard.check(B, NOW_MS + 10, NOW + 0.010)  # per peer
    guard.check(A, NOW_MS + 21, NOW + 0.021)  # measured from the last accepted one


def test_a_clock_that_went_back_is_not_a_flood():
    guard = HelloGuard()
    guard.check(A, NOW_MS, NOW)
    guard.check(A, NOW_MS + 1, NOW - 60)


def test_forget_drops_the_record_and_the_flood_memory():
    guard = HelloGuard()
    guard.check(A, NOW_MS, NOW)
    guard.record(A, NOW_MS)
    guard.forget(A)
    guard.check(A, NOW_MS, NOW + 0.001)


def test_flood_memory_is_bounded_for_unauthenticated_peer_ids():
    guard = HelloGuard()
    guard.max_tracked = 100
    for k in range(1000):
        guard.check(f"{k:040x}", NOW * 1000, NOW)
    assert len(guard._seen_at) == 100
    with pytest.raises(HandshakeFlood):  # the most recent ones are still remembered
        guard.check(f"{999:040x}", NOW * 1000, NOW + 0.001)
