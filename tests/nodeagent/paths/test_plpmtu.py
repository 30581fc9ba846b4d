"""The path MTU search of one address (paths/plpmtu.py) on a fake clock, against a simulated path
that carries probes up to some size and loses the ones it is told to."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.paths.plpmtu import (
    CHECK_TRIES,
    DEAD_RETRY_S,
    LOST_AFTER_S,
    RECHECK_S,
    SEARCH_ROUND_S,
    SEARCH_ROUNDS,
    UNDERLAY_MTUS,
    Found,
    MtuSearch,
    SendMtuProbe,
    State,
    ladder,
)

OVERHEAD = 20 + 8 + 36  # IPv4 and UDP headers, a frame's header and tag
FULL = 1500 - OVERHEAD  # 1,436: the overlay MTU of a 1,500-byte link
SIZES = ladder(FULL, OVERHEAD, 576 - OVERHEAD)
STEP = 0.05


class Path:
    """Answers a probe after `rtt` seconds when it is no bigger than `carries` and `lose(probe)`
    is false."""

    def __init__(self, search: MtuSearch, carries: int, rtt: float = 0.02, lose=lambda probe: False) -> None:
        self.search = search
        self.carries = carries
        self.rtt = rtt
        self.lose = lose
        self.now = 0.0
        self.sent: list[SendMtuProbe] = []
        self.found: list[Found] = []
        self.in_flight: list[tuple[float, int]] = []

    def _take(self, events) -> None:
        for ev in events:
            if isinstance(ev, SendMtuProbe):
                self.sent.append(ev)
                if ev.size <= self.carries and not self.lose(ev):
                    self.in_flight.append((self.now + self.rtt, ev.sequence))
            else:
                self.found.append(ev)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + STEP, 6)
            due = [s for t, s in self.in_flight if t <= self.now]
            self.in_flight = [(t, s) for t, s in self.in_flight if t > self.now]
            for seq in due:
                self._take(self.search.on_ack(seq, self.now))
            self._take(self.search.tick(self.now))


def searched(carries: int, **kw) -> Path:
    path = Path(MtuSearch(SIZES, now=0.0), carries, **kw)
    return path


SEARCH_TIME = CHECK_TRIES * LOST_AFTER_S + SEARCH_ROUNDS * SEARCH_ROUND_S + 1


def test_the_ladder_is_the_full_size_then_the_usual_underlay_mtus_below_it():
    assert SIZES[0] == FULL and list(SIZES) == sorted(SIZES, reverse=True)
    assert 1492 - OVERHEAD in SIZES and 1280 - OVERHEAD in SIZES and 576 - OVERHEAD in SIZES
    assert all(576 - OVERHEAD <= s <= FULL for s in SIZES)
    assert len(SIZES) == len(UNDERLAY_MTUS)  # 1,500 less the overhead is the full size itself
    # an overlay MTU chosen below 1,500 - 64 starts there; IPv6's floor is 1,280
    assert ladder(1380, 84, 1280 - 84) == (1380, 1376, 1366, 1356, 1336, 1316, 1296, 1276, 1256, 1236, 1216,
                                           1196)
    with pytest.raises(ValueError):
        ladder(500, OVERHEAD, 512)
    with pytest.raises(ValueError):
        MtuSearch((1000, 1200), now=0.0)
    with pytest.raises(ValueError):
        MtuSearch((), now=0.0)


def test_a_path_that_carries_full_size_frames_costs_one_probe_and_says_nothing_to_enforce():
    path = searched(FULL)
    path.run(5)
    assert [p.size for p in path.sent] == [FULL]
    assert path.found == []  # nothing to enforce: the data path needs no limit
    assert path.search.status(path.now) == {"state": "ok", "fits": FULL,
                                            "checked_ago_s": round(path.now - path.search.checked_at, 3)}
    path.run(RECHECK_S)  # checked again after RECHECK_S, one probe
    assert [p.size for p in path.sent] == [FULL, FULL]


def test_a_black_hole_is_measured_to_the_largest_size_of_the_ladder_it_carries():
    path = searched(1280 - OVERHEAD)
    path.run(SEARCH_TIME)
    assert path.found == [Found(1280 - OVERHEAD)]
    assert [p.size for p in path.sent[:CHECK_TRIES]] == [FULL] * CHECK_TRIES
    assert sorted(p.size for p in path.sent[CHECK_TRIES:]) == sorted(SIZES * SEARCH_ROUNDS)
    assert path.search.status(path.now)["state"] == "narrow"
    assert path.search.fits == 1280 - OVERHEAD
    # between two ladder sizes: the one below
    odd = searched(1390 - OVERHEAD)
    odd.run(SEARCH_TIME)
    assert odd.found == [Found(1380 - OVERHEAD)]


def test_states_while_it_searches():
    path = searched(1000)
    path.run(STEP)
    assert path.search.state is State.CHECK and path.search.status(path.now)["state"] == "check"
    path.run(CHECK_TRIES * LOST_AFTER_S + 0.1)
    assert path.search.state is State.SEARCH and path.search.status(path.now)["state"] == "search"
    assert path.search.status(path.now)["fits"] is None and path.found == []


def test_one_lost_full_size_probe_is_no_reason_to_search():
    path = searched(FULL, lose=lambda probe: probe.sequence == 1)
    path.run(SEARCH_TIME)
    assert [p.size for p in path.sent] == [FULL, FULL]
    assert path.found == [] and path.search.result == "ok"


def test_a_size_lost_in_one_search_round_is_found_in_the_other():
    first = {}

    def lose(probe):  # the first probe of 1,216 bytes is lost
        return probe.size == 1280 - OVERHEAD and first.setdefault("seq", probe.sequence) == probe.sequence

    path = searched(1280 - OVERHEAD, lose=lose)
    path.run(SEARCH_TIME)
    assert path.found == [Found(1280 - OVERHEAD)]


def test_a_late_answer_to_a_full_size_probe_ends_the_search_as_ok():
    path = searched(FULL, rtt=CHECK_TRIES * LOST_AFTER_S + 0.3)  # slower than the check's patience
    path.run(SEARCH_TIME)
    assert path.found == [] and path.search.result == "ok"
    assert path.search.state is State.IDLE


def test_a_path_that_answers_nothing_is_dead_and_keeps_what_was_known():
    path = searched(1280 - OVERHEAD)
    path.run(SEARCH_TIME)
    path.carries = 0  # the path goes down
    path.run(RECHECK_S + SEARCH_TIME)
    assert path.found == [Found(1280 - OVERHEAD)]  # no event: what is enforced stays
    assert path.search.status(path.now) == {"state": "dead", "fits": 1280 - OVERHEAD,
                                            "checked_ago_s": pytest.approx(path.now - path.search.checked_at)}
    sent = len(path.sent)
    path.run(DEAD_RETRY_S)  # tried again after DEAD_RETRY_S, not RECHECK_S
    assert len(path.sent) > sent


def test_a_path_that_widens_or_narrows_again_is_seen_at_the_next_check():
    path = searched(1280 - OVERHEAD)
    path.run(SEARCH_TIME)
    path.carries = 1400 - OVERHEAD
    path.run(RECHECK_S + SEARCH_TIME)
    assert path.found[-1] == Found(1400 - OVERHEAD)
    path.carries = FULL
    path.run(RECHECK_S + SEARCH_TIME)
    assert path.found[-1] == Found(None)  # full-size frames fit again: nothing to enforce
    path.carries = 1000
    path.run(RECHECK_S + SEARCH_TIME)
    assert path.found[-1] == Found(1000 - OVERHEAD)


def test_answers_it_did_not_ask_for_are_ignored():
    search = MtuSearch(SIZES, now=0.0, wait_s=1.0)
    assert search.tick(0.5) == []  # the first check waits wait_s
    assert search.on_ack(1, 0.5) == []  # idle: nothing in flight
    probe = search.tick(1.0)[0]
    assert search.on_ack(probe.sequence + 7, 1.1) == []  # never sent
    assert search.state is State.CHECK
    assert search.on_ack(probe.sequence, 1.2) == [] and search.result == "ok"
    assert search.on_ack(probe.sequence, 1.3) == []  # twice: once counts


@settings(max_examples=200, deadline=None)
@given(carries=st.integers(400, 1600), loss=st.floats(0, 0.6), seed=st.integers(0, 2**32 - 1))
def test_it_never_claims_a_size_the_path_does_not_carry(carries, loss, seed):
    """Whatever the path carries and loses: a size found is one it carried, the largest of the
    ladder when nothing was lost, and "ok" only when the full size crossed."""
    rng = random.Random(seed)
    path = searched(carries, lose=lambda probe: rng.random() < loss)
    path.run(SEARCH_TIME)
    fits = path.search.fits
    assert fits is None or fits <= carries
    if path.search.result == "ok":
        assert carries >= FULL
    if loss == 0:
        best = max((s for s in SIZES if s <= carries), default=None)
        if best == FULL:
            assert path.search.result == "ok" and path.found == []
        elif best is None:
            assert path.search.result == "dead" and path.found == []
        else:
            assert path.found == [Found(best)]
