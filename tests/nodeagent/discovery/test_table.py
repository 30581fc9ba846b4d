"""The routing table: closest() against a brute-force sort, the least-recently-seen eviction
rule, replacement cache, failures, subnet cap, refresh, and invariants under random operations."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from nodeagent.discovery.ids import bucket_index, distance, random_id_in_bucket
from nodeagent.discovery.table import Insert, RoutingTable

OWN = bytes(20)


def rid(rng: random.Random) -> bytes:
    return rng.randbytes(20)


def in_bucket(index: int, n: int) -> bytes:
    """The n-th distinct id of bucket `index` of OWN (index >= 8 leaves room for many)."""
    return random_id_in_bucket(OWN, index, n.to_bytes(20, "big"))


def brute_closest(table: RoutingTable, target: bytes, n: int, exclude=None) -> list[bytes]:
    ids = [c.peer_id for c in table.contacts() if c.peer_id != exclude]
    return sorted(ids, key=lambda i: distance(i, target))[:n]


@pytest.mark.parametrize("seed", range(8))
def test_closest_matches_a_brute_force_sort(seed):
    rng = random.Random(seed)
    own = rid(rng)
    table = RoutingTable(own, k=4)  # small buckets: the far ones overflow, ordering matters
    for n in range(400):
        out, oldest = table.seen(rid(rng), f"198.18.{n // 250}.{n % 250 + 1}", 8443, now=n)
        if out is Insert.PING_OLDEST:
            table.ping_result(oldest.peer_id, alive=rng.random() < 0.5, now=n)
    # near-own ids too, so the low buckets are populated
    for _ in range(60):
        near = random_id_in_bucket(own, rng.randrange(0, 12), rng.randbytes(20))
        table.seen(near, "198.18.9.9", 1, now=500)
    assert len(table) == sum(1 for _ in table.contacts())
    present = [c.peer_id for c in table.contacts()]
    targets = [rid(rng) for _ in range(100)] + [own] + present[:20]
    targets += [random_id_in_bucket(own, i, rng.randbytes(20)) for i in range(160)]
    for target in targets:
        for n in (1, 3, 20, 500):
            got = [c.peer_id for c in table.closest(target, n)]
            assert got == brute_closest(table, target, n)
        excl = present[0]
        got = [c.peer_id for c in table.closest(target, 20, exclude=excl)]
        assert got == brute_closest(table, target, 20, exclude=excl)


def test_a_full_bucket_keeps_its_oldest_contact_when_it_answers():
    table = RoutingTable(OWN, k=3, replacements=2, fresh_s=0)
    old = [in_bucket(150, n) for n in range(3)]
    for n, pid in enumerate(old):
        assert table.seen(pid, "198.18.0.1", 8443 + n, now=n)[0] is Insert.ADDED
    newcomer = in_bucket(150, 99)
    out, to_ping = table.seen(newcomer, "198.18.0.9", 8443, now=10)
    assert out is Insert.PING_OLDEST and to_ping.peer_id == old[0]
    # while the ping is pending, more newcomers only wait in the cache
    other = in_bucket(150, 98)
    assert table.seen(other, "198.18.0.8", 8443, now=11) == (Insert.CACHED, None)
    assert table.ping_result(old[0], alive=True, now=12) is None
    assert [c.peer_id for c in table.bucket(150)] == [old[1], old[2], old[0]]  # LRS first
    assert newcomer not in table and other not in table
    assert [c.peer_id for c in table.replacement_cache(150)] == [newcomer, other]


def test_a_full_bucket_replaces_its_oldest_contact_when_it_is_dead():
    table = RoutingTable(OWN, k=3, replacements=2, fresh_s=0)
    old = [in_bucket(150, n) for n in range(3)]
    for n, pid in enumerate(old):
        table.seen(pid, "198.18.0.1", 8443 + n, now=n)
    a, b, c = (in_bucket(150, 90 + n) for n in range(3))
    assert table.seen(a, "198.18.0.2", 1, now=10)[0] is Insert.PING_OLDEST
    table.seen(b, "198.18.0.3", 1, now=11)
    table.seen(c, "198.18.0.4", 1, now=12)  # the cache holds 2: a is forgotten
    promoted = table.ping_result(old[0], alive=False, now=13)
    assert promoted.peer_id == c  # the most recently seen newcomer
    assert old[0] not in table and c in table and a not in table
    assert [x.peer_id for x in table.replacement_cache(150)] == [b]
    assert len(table) == 3


def test_a_recently_heard_oldest_contact_is_not_pinged():
    table = RoutingTable(OWN, k=2, fresh_s=60)
    a, b = in_bucket(150, 1), in_bucket(150, 2)
    table.seen(a, "198.18.0.1", 1, now=100)
    table.seen(b, "198.18.0.2", 1, now=110)
    assert table.has_room(in_bucket(150, 3)) is False and table.has_room(in_bucket(151, 3)) is True
    assert table.seen(in_bucket(150, 3), "198.18.0.3", 1, now=159) == (Insert.CACHED, None)
    out, oldest = table.seen(in_bucket(150, 4), "198.18.0.4", 1, now=160)
    assert out is Insert.PING_OLDEST and oldest.peer_id == a


def test_long_lived_contacts_survive_a_flood_of_newcomers():
    """Eclipse resistance of the table: however many (verified) newcomers arrive, contacts that
    keep answering are never displaced."""
    table = RoutingTable(OWN, k=20)
    honest = [in_bucket(159, n) for n in range(20)]
    for n, pid in enumerate(honest):
        table.seen(pid, "198.18.0.1", 1000 + n, now=0)
    for n in range(2000):
        out, oldest = table.seen(in_bucket(159, 10_000 + n), "198.18.66.6", 1, now=1 + n)
        if out is Insert.PING_OLDEST:
            table.ping_result(oldest.peer_id, alive=True, now=1 + n)
    assert sorted(c.peer_id for c in table.bucket(159)) == sorted(honest)
    assert len(table.replacement_cache(159)) == 8


def test_seen_again_moves_to_the_tail_and_updates_the_address():
    table = RoutingTable(OWN, k=3)
    a, b = in_bucket(150, 1), in_bucket(150, 2)
    table.seen(a, "198.18.0.1", 1, now=1)
    table.seen(b, "198.18.0.2", 1, now=2)
    out, contact = table.seen(a, "198.18.0.7", 9, now=5)
    assert out is Insert.UPDATED and contact.address == ("198.18.0.7", 9)
    assert contact.first_seen == 1 and contact.last_seen == 5
    assert [c.peer_id for c in table.bucket(150)] == [b, a]


def test_failures_remove_a_contact_after_max_failures_and_promote_a_replacement():
    table = RoutingTable(OWN, k=2, max_failures=3, fresh_s=0)
    a, b, c = in_bucket(150, 1), in_bucket(150, 2), in_bucket(150, 3)
    table.seen(a, "198.18.0.1", 1, now=1)
    table.seen(b, "198.18.0.2", 1, now=2)
    _, oldest = table.seen(c, "198.18.0.3", 1, now=3)
    table.ping_result(oldest.peer_id, alive=True, now=3)  # c waits
    assert table.failed(b, now=4) is False
    table.seen(b, "198.18.0.2", 1, now=5)  # an answer resets the count
    assert table.failed(b, now=6) is False
    assert table.failed(b, now=7) is False
    assert table.failed(b, now=8) is True
    assert b not in table and c in table
    assert table.failed(in_bucket(150, 77), now=9) is False  # unknown: nothing happens


def test_remove_forgets_at_once():
    table = RoutingTable(OWN, k=2)
    a = in_bucket(150, 1)
    table.seen(a, "198.18.0.1", 1, now=1)
    assert table.remove(a) is True
    assert a not in table and len(table) == 0
    assert table.remove(a) is False


def test_own_id_is_never_inserted():
    table = RoutingTable(OWN)
    assert table.seen(OWN, "198.18.0.1", 1, now=0) == (Insert.SELF, None)
    assert len(table) == 0 and table.get(OWN) is None


def test_subnet_cap_per_bucket():
    table = RoutingTable(OWN, k=20, subnet_cap=2)
    ids = [in_bucket(159, n) for n in range(5)]
    assert table.seen(ids[0], "198.18.1.1", 1, now=0)[0] is Insert.ADDED
    assert table.seen(ids[1], "198.18.1.200", 1, now=0)[0] is Insert.ADDED
    assert table.seen(ids[2], "198.18.1.7", 1, now=0)[0] is Insert.REFUSED  # third from 198.18.1.0/24
    assert table.seen(ids[2], "198.18.2.7", 1, now=0)[0] is Insert.ADDED
    # an IPv6 /48
    assert table.seen(ids[3], "2001:db8:1:1::1", 1, now=0)[0] is Insert.ADDED
    assert table.seen(ids[4], "2001:db8:1:ffff::2", 1, now=0)[0] is Insert.ADDED
    assert table.seen(in_bucket(159, 9), "2001:db8:1::3", 1, now=0)[0] is Insert.REFUSED
    # another bucket has its own count
    assert table.seen(in_bucket(158, 1), "198.18.1.9", 1, now=0)[0] is Insert.ADDED
    # a known contact moving into a full subnet keeps its old address
    assert table.seen(ids[2], "198.18.1.8", 1, now=1)[0] is Insert.REFUSED
    assert table.get(ids[2]).ip == "198.18.2.7"


def test_stale_buckets_from_the_nearest_non_empty_one():
    table = RoutingTable(OWN)
    assert table.stale_buckets(now=0, interval=3600) == []
    table.seen(in_bucket(155, 1), "198.18.0.1", 1, now=0)
    assert table.stale_buckets(now=0, interval=3600) == list(range(155, 160))
    for i in range(155, 160):
        table.lookup_started(random_id_in_bucket(OWN, i, bytes(20)), now=100)
    assert table.stale_buckets(now=3699, interval=3600) == []
    table.lookup_started(random_id_in_bucket(OWN, 157, bytes(20)), now=200)
    assert table.stale_buckets(now=3700, interval=3600) == [155, 156, 158, 159]


class TableMachine(RuleBasedStateMachine):
    """Random operations; the structural invariants hold after each."""

    def __init__(self):
        super().__init__()
        self.table = RoutingTable(OWN, k=3, replacements=2, subnet_cap=2)
        self.now = 0.0
        self.pool = [in_bucket(i, n) for i in (150, 151, 159) for n in range(8)]

    @rule(n=st.integers(0, 23), net=st.integers(0, 3))
    def seen(self, n, net):
        self.now += 1
        out, other = self.table.seen(self.pool[n], f"198.18.{net}.{n + 1}", 8443, self.now)
        if out is Insert.PING_OLDEST:
            assert other.peer_id == self.table.bucket(bucket_index(OWN, self.pool[n]))[0].peer_id

    @rule(n=st.integers(0, 23), alive=st.booleans())
    def ping(self, n, alive):
        self.now += 1
        self.table.ping_result(self.pool[n], alive, self.now)

    @rule(n=st.integers(0, 23))
    def fail(self, n):
        self.now += 1
        self.table.failed(self.pool[n], self.now)

    @rule(n=st.integers(0, 23))
    def remove(self, n):
        self.table.remove(self.pool[n])

    @invariant()
    def structure(self):
        seen = set()
        total = 0
        for i in range(160):
            bucket = self.table.bucket(i)
            assert len(bucket) <= 3
            total += len(bucket)
            for c in bucket:
                assert bucket_index(OWN, c.peer_id) == i
                assert c.peer_id not in seen
                seen.add(c.peer_id)
            nets = [c.ip.rsplit(".", 1)[0] for c in bucket]
            assert all(nets.count(x) <= 2 for x in nets)
            cache = self.table.replacement_cache(i)
            assert len(cache) <= 2
            assert not {c.peer_id for c in cache} & {c.peer_id for c in bucket}
            assert [c.last_seen for c in bucket] == sorted(c.last_seen for c in bucket)
        assert total == len(self.table)


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
