"""The lookup state machine on a simulated network (no I/O): results against a brute-force
closest-k, hop counts, FIND_VALUE quorum, timeouts, and the eclipse attack (a third of responders
lying), including a demonstration that a classic shortlist cut at k is eclipsed in the same setting."""

from __future__ import annotations

import math
import random
from collections import deque

import pytest

from nodeagent.discovery.ids import distance
from nodeagent.discovery.lookup import Lookup
from nodeagent.discovery.table import Insert, RoutingTable

K = 20


class Net:
    """N nodes with random ids; each table filled from every other node in a random order
    (full buckets keep their oldest contacts, as they would with live nodes)."""

    def __init__(self, n: int, seed: int, liars: float = 0.0):
        rng = random.Random(seed)
        self.rng = rng
        self.ids = [rng.randbytes(20) for _ in range(n)]
        self.address = {pid: ("sim", i) for i, pid in enumerate(self.ids)}
        self.tables = {}
        for pid in self.ids:
            table = RoutingTable(pid, k=K)
            others = [o for o in self.ids if o != pid]
            rng.shuffle(others)
            for t, other in enumerate(others):
                out, oldest = table.seen(other, "198.18.0.1", self.address[other][1], now=t)
                if out is Insert.PING_OLDEST:
                    table.ping_result(oldest.peer_id, alive=True, now=t)
            self.tables[pid] = table
        self.liars = set(rng.sample(self.ids, int(n * liars)))

    def honest_contacts(self, pid, target):
        return [(c.peer_id, self.address[c.peer_id]) for c in self.tables[pid].closest(target, K)]

    def true_closest(self, target, exclude):
        return sorted((p for p in self.ids if p != exclude), key=lambda p: distance(p, target))[:K]


def fabricate(rng, target, n):
    """Unenrolled ids nearer to the target than any real node (only the low bits differ)."""
    t = int.from_bytes(target, "big")
    return [((t ^ rng.getrandbits(40)) | 1).to_bytes(20, "big") for _ in range(n)]


def liar_answer(net, pid, target, strategy):
    rng = net.rng
    if strategy == "fabricate":
        return [(f, ("attacker", 666)) for f in fabricate(rng, target, K)]
    if strategy == "collude":
        colluders = sorted(net.liars - {pid}, key=lambda p: distance(p, target))[:K]
        return [(c, net.address[c]) for c in colluders]
    if strategy == "misdirect":  # real honest ids near the target, at the attacker's address
        near = net.true_closest(target, exclude=pid)
        return [(c, ("attacker", 666)) for c in near]
    if strategy == "mixed":
        return liar_answer(net, pid, target, rng.choice(["fabricate", "collude", "misdirect"]))
    raise AssertionError(strategy)


def run(net: Net, source: bytes, target: bytes, strategy: str | None = None, **kw) -> Lookup:
    """Drive a lookup to completion; answers are served one at a time, in request order."""
    seeds = [(c.peer_id, net.address[c.peer_id]) for c in net.tables[source].closest(target, K)]
    lk = Lookup(target, seeds, now=0.0, own_id=source, **kw)
    queue: deque = deque()
    now = 0.0
    for _ in range(100_000):
        if lk.done:
            return lk
        queue.extend(lk.next_queries(now))
        assert queue, "lookup not done but nothing to ask"
        q = queue.popleft()
        now += 0.001
        if q.peer_id not in net.address or net.address[q.peer_id] != q.address:
            lk.on_failure(q.peer_id, now)  # nobody there can prove it is that enrolled node
        elif q.peer_id in net.liars and strategy:
            lk.on_response(q.peer_id, liar_answer(net, q.peer_id, target, strategy), now)
        else:
            lk.on_response(q.peer_id, net.honest_contacts(q.peer_id, target), now)
    raise AssertionError("lookup did not finish")


@pytest.mark.parametrize(("n", "seed"), [(50, 1), (200, 2), (600, 3)])
def test_lookup_finds_exactly_the_brute_force_closest_k(n, seed):
    net = Net(n, seed)
    rng = random.Random(seed)
    worst = 0
    for _ in range(25):
        source = rng.choice(net.ids)
        target = rng.choice([rng.randbytes(20), rng.choice(net.ids)])
        lk = run(net, source, target)
        got = [f.peer_id for f in lk.result()]
        assert got == net.true_closest(target, exclude=source)
        assert all(f.address == net.address[f.peer_id] for f in lk.result())
        worst = max(worst, lk.hops)
    assert 1 <= worst <= math.ceil(math.log2(n))


def test_lookup_with_fewer_than_k_nodes_returns_them_all():
    net = Net(7, 4)
    lk = run(net, net.ids[0], net.ids[3])
    assert sorted(f.peer_id for f in lk.result()) == sorted(net.ids[1:])


def test_no_seeds_means_done_and_empty():
    lk = Lookup(bytes(20), [], now=0)
    assert lk.done and lk.result() == [] and lk.next_queries(0) == []


@pytest.mark.parametrize("strategy", ["fabricate", "collude", "misdirect", "mixed"])
def test_eclipse_a_third_of_responders_lying_cannot_hide_honest_closest_nodes(strategy):
    net = Net(300, 11, liars=1 / 3)
    rng = random.Random(5)
    honest = [p for p in net.ids if p not in net.liars]
    for _ in range(30):
        source = rng.choice(honest)
        target = rng.randbytes(20)
        lk = run(net, source, target, strategy)
        got = {f.peer_id for f in lk.result()}
        truth = net.true_closest(target, exclude=source)
        missed = [p for p in truth if p not in net.liars and p not in got]
        assert missed == [], f"{len(missed)} honest nodes of the true {K} closest were hidden"
        # fabricated (unenrolled) ids never count as found
        assert got <= set(net.ids)
        # every result answered at its real address
        assert all(f.address == net.address[f.peer_id] for f in lk.result())
        if strategy in ("fabricate", "misdirect"):
            # a lying responder costs about two wasted requests before it is distrusted
            assert lk.failures <= 3 * (len(lk.distrusted) + 1) + len(lk.distrusted)


def test_classic_shortlist_cut_at_k_is_eclipsed_in_the_same_setting():
    """The attack in the test above is strong enough to matter: a lookup that keeps only the k
    nearest candidates and never distrusts anyone loses honest nodes to fabricated ids."""
    net = Net(300, 11, liars=1 / 3)
    rng = random.Random(5)
    honest = [p for p in net.ids if p not in net.liars]
    eclipsed = 0
    for _ in range(30):
        source = rng.choice(honest)
        target = rng.randbytes(20)
        lk = run(net, source, target, "fabricate", max_candidates=K, voucher_failures=10**9)
        got = {f.peer_id for f in lk.result()}
        truth = net.true_closest(target, exclude=source)
        if any(p not in net.liars and p not in got for p in truth):
            eclipsed += 1
    assert eclipsed >= 10


def test_find_value_collects_a_quorum_and_keeps_the_highest_rank():
    a, b, c, d = (bytes([n]) * 20 for n in (1, 2, 3, 4))
    lk = Lookup(bytes(20), [(a, ("x", 1)), (b, ("x", 2)), (c, ("x", 3)), (d, ("x", 4))], now=0,
                find_value=True, value_quorum=3, alpha=4)
    qs = lk.next_queries(0)
    assert {q.peer_id for q in qs} == {a, b, c, d}
    lk.on_response(a, [], 1, value="stale", rank=3)
    lk.on_response(b, [], 1, value="fresh", rank=5)
    assert not lk.done
    lk.on_response(c, [], 1, value="stale again", rank=3)
    assert lk.done
    assert lk.best_value[:2] == (5, "fresh")
    lk.distrust(b)  # e.g. its value failed validation after all
    assert lk.best_value[:2] == (3, "stale")


def test_a_timed_out_request_fails_and_the_next_candidate_is_asked():
    ids = [bytes([n]) * 20 for n in range(1, 6)]
    lk = Lookup(bytes(20), [(p, ("x", n)) for n, p in enumerate(ids)], now=0, alpha=2, query_timeout=2.0)
    first = lk.next_queries(0)
    assert len(first) == 2 and lk.next_queries(0) == []
    assert lk.next_deadline() == 2.0
    assert lk.expire(1.9) == []
    assert sorted(lk.expire(2.0)) == sorted(q.peer_id for q in first)
    second = lk.next_queries(2.0)
    assert len(second) == 2 and not {q.peer_id for q in second} & {q.peer_id for q in first}
    lk.on_response(first[0].peer_id, [], 2.5)  # too late: ignored
    assert first[0].peer_id not in {f.peer_id for f in lk.result()}


def test_a_node_named_at_two_addresses_is_tried_at_the_second_when_the_first_fails():
    x, liar, honest = bytes([9]) * 20, bytes([1]) * 20, bytes([2]) * 20
    lk = Lookup(bytes(20), [(liar, ("l", 1)), (honest, ("h", 1))], now=0, alpha=1)
    (q,) = lk.next_queries(0)
    lk.on_response(q.peer_id, [(x, ("attacker", 666))], 0)
    (q2,) = lk.next_queries(0)
    other = honest if q.peer_id == liar else liar
    if q2.peer_id == x:
        lk.on_failure(x, 0)
        (q2,) = lk.next_queries(0)
    assert q2.peer_id == other
    lk.on_response(other, [(x, ("real", 7))], 0)
    while not lk.done:
        for q in lk.next_queries(0):
            if q.peer_id == x and q.address == ("real", 7):
                lk.on_response(x, [], 0)
            elif q.peer_id == x:
                lk.on_failure(x, 0)
    assert ("real", 7) in {f.address for f in lk.result() if f.peer_id == x}
