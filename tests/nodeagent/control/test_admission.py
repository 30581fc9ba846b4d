"""The control port's admission limits on their own (control/admission.py, pure): what one source
is, token buckets, and the doorway of unauthenticated connections with its displacement rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.control.admission import Bucket, Buckets, Doorway, source_key


def test_a_source_is_an_ipv4_address_or_an_ipv6_64():
    assert source_key("198.18.0.7") == "198.18.0.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:198.18.0.7") == "198.18.0.7"  # a dual-stack socket's IPv4 peer
    assert source_key("fe80::1%eth0") == "fe80::/64"


def test_a_bucket_starts_full_refills_at_its_rate_and_never_beyond_its_burst():
    b = Bucket(rate=2.0, burst=3, now=100.0)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(100.5) and not b.take(100.5)  # 2 per second
    assert [b.take(1000.0) for _ in range(4)] == [True, True, True, False]  # long idle: only the burst
    assert not b.take(99.0)  # a clock that went back gives nothing


def test_buckets_are_per_key_and_their_number_is_bounded():
    bs = Buckets(rate=1.0, burst=1, max_keys=3)
    assert bs.take("a", 0.0) and not bs.take("a", 0.0)
    assert bs.take("b", 0.0)  # another key, its own bucket
    for k in "cdef":
        bs.take(k, 0.0)
    assert len(bs) == 3
    bs.forget("f")
    assert len(bs) == 2


def test_the_doorway_keeps_per_source_shares_and_displaces_the_sources_own_oldest():
    door = Doorway(total=4, per_source=2)
    assert door.enter("a1", "A") == [] and door.enter("a2", "A") == []
    assert door.enter("a3", "A") == ["a1"]  # A is at its share: its own oldest goes
    assert door.of("A") == 2 and "a1" not in door and "a3" in door


def test_a_full_doorway_displaces_the_oldest_connection_of_the_source_holding_the_most():
    door = Doorway(total=4, per_source=3)
    for conn, src in (("b1", "B"), ("a1", "A"), ("a2", "A"), ("c1", "C")):
        assert door.enter(conn, src) == []
    assert door.enter("d1", "D") == ["a1"]  # full: A holds the most, its oldest goes (not b1, older)
    assert door.enter("d2", "D") == ["b1"]  # now A, B, C, D hold one each... ties: the oldest overall
    assert len(door) == 4


def test_a_connection_that_left_is_never_displaced_and_frees_its_place():
    door = Doorway(total=2, per_source=2)
    door.enter("peer", "P")
    assert door.leave("peer") and not door.leave("peer")  # authenticated: out of the doorway
    door.enter("x1", "X")
    door.enter("x2", "X")
    assert door.enter("x3", "X") == ["x1"]
    assert "peer" not in door


def test_shares_must_fit_the_total():
    with pytest.raises(ValueError):
        Doorway(total=2, per_source=3)
    with pytest.raises(ValueError):
        Doorway(total=2, per_source=0)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 40)), max_size=120),
       total=st.integers(1, 6), share=st.integers(1, 6))
def test_any_sequence_keeps_the_bounds_and_displaces_only_waiting_connections(ops, total, share):
    share = min(share, total)
    door = Doorway(total=total, per_source=share)
    waiting: dict[int, int] = {}  # the model: connection -> source, in arrival order
    for n, (enter, source, pick) in enumerate(ops):
        if enter:
            victims = door.enter(n, source)
            assert len(victims) <= 1
            for v in victims:
                assert v in waiting
                if sum(1 for s in waiting.values() if s == source) >= share:
                    assert waiting[v] == source  # the newcomer's own source, its oldest
                    assert v == next(c for c, s in waiting.items() if s == source)
                del waiting[v]
            waiting[n] = source
        elif waiting:
            conn = list(waiting)[pick % len(waiting)]
            assert door.leave(conn)
            del waiting[conn]
        assert len(door) == len(waiting) <= total
        for s in set(waiting.values()):
            assert door.of(s) == sum(1 for x in waiting.values() if x == s) <= share
