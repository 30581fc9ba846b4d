"""Replay window: the 34 RFC 6479 / WireGuard vectors as a numbered table, plus bulk tests.

The case list follows wireguard-go's replay/replay_test.go (ported there from the Linux
kernel's selftest/counter.c); the test code is ours.
"""

from __future__ import annotations

import random

import pytest

from nodeagent.protocol.replay import WINDOW_SIZE, ReplayWindow

# the vector table uses its own limit, 2^64 - 2^4 - 1, like the original
LIMIT = (1 << 64) - (1 << 4) - 1
T_LIM = WINDOW_SIZE + 1

# (case number, counter, expected); run in order against ONE window
VECTORS = [
    (1, 0, True),
    (2, 1, True),
    (3, 1, False),
    (4, 9, True),
    (5, 8, True),
    (6, 7, True),
    (7, 7, False),
    (8, T_LIM, True),
    (9, T_LIM - 1, True),
    (10, T_LIM - 1, False),
    (11, T_LIM - 2, True),
    (12, 2, True),
    (13, 2, False),
    (14, T_LIM + 16, True),
    (15, 3, False),
    (16, T_LIM + 16, False),
    (17, T_LIM * 4, True),
    (18, T_LIM * 4 - (T_LIM - 1), True),
    (19, 10, False),
    (20, T_LIM * 4 - T_LIM, False),
    (21, T_LIM * 4 - (T_LIM + 1), False),
    (22, T_LIM * 4 - (T_LIM - 2), True),
    (23, T_LIM * 4 + 1 - T_LIM, False),
    (24, 0, False),
    (25, LIMIT, False),
    (26, LIMIT - 1, True),
    (27, LIMIT, False),
    (28, LIMIT - 1, False),
    (29, LIMIT - 2, True),
    (30, LIMIT + 1, False),
    (31, LIMIT + 2, False),
    (32, LIMIT - 2, False),
    (33, LIMIT - 3, True),
    (34, 0, False),
]


def test_window_is_wireguards_8128():
    assert WINDOW_SIZE == 8128


def test_the_34_vectors_give_the_expected_sequence():
    w = ReplayWindow()
    failures = [(n, c, exp) for n, c, exp in VECTORS if w.check(c, LIMIT) is not exp]
    assert failures == []
    assert len(VECTORS) == 34


def run(counters, limit=LIMIT):
    w = ReplayWindow()
    return w, [w.check(c, limit) for c in counters]


def test_bulk_1_ascending_whole_window_then_zero_once():
    w, results = run(range(1, WINDOW_SIZE + 1))
    assert all(results)
    assert w.check(0, LIMIT) is True
    assert w.check(0, LIMIT) is False


def test_bulk_2_ascending_from_two_then_one_fits_and_zero_is_too_old():
    w, results = run(range(2, WINDOW_SIZE + 2))
    assert all(results)
    assert w.check(1, LIMIT) is True
    assert w.check(0, LIMIT) is False


def test_bulk_3_descending_from_window_plus_one_all_accepted():
    _, results = run(range(WINDOW_SIZE + 1, 0, -1))
    assert all(results)


def test_bulk_4_descending_from_window_plus_two_then_zero_is_too_old():
    w, results = run(range(WINDOW_SIZE + 2, 1, -1))
    assert all(results)
    assert w.check(0, LIMIT) is False


def test_bulk_5_descending_then_a_newer_one_pushes_zero_out():
    w, results = run(range(WINDOW_SIZE, 0, -1))
    assert all(results)
    assert w.check(WINDOW_SIZE + 1, LIMIT) is True
    assert w.check(0, LIMIT) is False


def test_bulk_6_descending_then_zero_then_newer():
    w, results = run(range(WINDOW_SIZE, 0, -1))
    assert all(results)
    assert w.check(0, LIMIT) is True
    assert w.check(WINDOW_SIZE + 1, LIMIT) is True


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_in_window_counters_are_each_accepted_exactly_once(seed):
    rng = random.Random(seed)
    base = rng.randrange(0, 2**40)
    counters = [base + i for i in range(1000)]
    rng.shuffle(counters)
    twice = counters + rng.sample(counters, len(counters))
    w, results = run(twice)
    assert results[:1000] == [True] * 1000
    assert results[1000:] == [False] * 1000
    assert w.last == base + 999


def test_counter_older_than_the_window_is_rejected():
    w = ReplayWindow()
    assert w.check(20_000, LIMIT)
    assert w.check(20_000 - WINDOW_SIZE, LIMIT)  # exactly at the edge: still inside
    assert not w.check(20_000 - WINDOW_SIZE - 1, LIMIT)
    assert not w.check(20_000 - 8129, LIMIT)


@pytest.mark.parametrize("limit", [1, 100, 2**60, (1 << 64) - (1 << 13) - 1])
def test_counters_at_or_above_the_limit_are_rejected_and_do_not_move_the_window(limit):
    w = ReplayWindow()
    assert w.check(0, limit)
    assert not w.check(limit, limit)
    assert not w.check(limit + 1, limit)
    assert w.last == 0


def test_negative_counter_is_rejected():
    assert ReplayWindow().check(-1, LIMIT) is False


def test_big_jump_clears_the_ring_so_old_bits_do_not_alias():
    w = ReplayWindow()
    assert w.check(5, LIMIT)
    jump = 5 + 128 * 64 * 3  # same ring slot and bit, three laps later
    assert w.check(jump, LIMIT)
    assert w.check(jump - 64 * 127, LIMIT)
    assert not w.check(5, LIMIT)


def test_reset_forgets_everything():
    w = ReplayWindow()
    for c in range(100):
        w.check(c, LIMIT)
    w.reset()
    assert w.last == 0
    assert w.check(50, LIMIT)


class NaiveWindow:
    """Reference model: a set of seen counters and the highest one."""

    def __init__(self):
        self.seen = set()
        self.last = 0

    def check(self, c, limit):
        if c >= limit or c < 0:
            return False
        if c <= self.last and self.last - c > WINDOW_SIZE:
            return False
        if c in self.seen:
            return False
        self.seen.add(c)
        self.last = max(self.last, c)
        return True


@pytest.mark.parametrize("seed", range(4))
def test_ring_agrees_with_a_naive_set_on_random_traffic(seed):
    rng = random.Random(seed)
    w, ref = ReplayWindow(), NaiveWindow()
    c = 0
    for _ in range(20_000):
        r = rng.random()
        if r < 0.6:
            c += rng.randrange(1, 3)
            probe = c
        elif r < 0.9:
            probe = max(0, c - rng.randrange(0, WINDOW_SIZE + 200))
        else:
            c += rng.randrange(1, 3 * WINDOW_SIZE)
            probe = c
        assert w.check(probe, LIMIT) == ref.check(probe, LIMIT), (seed, probe)
