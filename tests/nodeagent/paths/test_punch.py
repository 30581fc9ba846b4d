"""Hole punching (paths/punch.py) on a fake clock: two `Punch` machines that talk through a simulated hub
and a simulated Internet of Linux-like NATs (RFC 4787 mapping and address-and-port-dependent
filtering), so every cell of the matrix and every timer is exercised without a socket."""

from __future__ import annotations

import heapq
import itertools

import pytest

from nodeagent.paths.candidates import Candidate
from nodeagent.paths.punch import (
    BACKOFF_S,
    GO_TIMEOUT_S,
    MIN_INTERVAL_S,
    OFFER_RETRY_S,
    OFFER_TRIES,
    PROBE_DURATION_S,
    Failed,
    Punch,
    SendCall,
    SendProbe,
    State,
    Validated,
)
from nodeagent.protocol.disco import Call, CallKind, CandidateKind, NatClass

K = CandidateKind
A_ID, B_ID = "aa" * 20, "bb" * 20
SMALL, FULL = 32, 1400
LAN_LATENCY, WAN_LATENCY, RELAY_LATENCY = 0.0005, 0.010, 0.040


def txids():
    counter = itertools.count(1)
    return lambda: next(counter).to_bytes(8, "big")


class Net:
    """Hosts behind NAT boxes. `kinds[host]`: "easy" (one port per socket, kept), "hard" (a new port
    per destination), "public" (no NAT). Hosts on the same `lan` share one NAT box."""

    def __init__(self, kinds: dict[str, str], same_lan: bool = False, mtu_blackhole: bool = False) -> None:
        self.kinds = kinds
        self.local = {"a": ("198.18.10.2", 9443), "b": ("198.18.10.3" if same_lan else "198.18.11.2", 9443)}
        self.public_ip = {"a": "198.19.0.10", "b": "198.19.0.10" if same_lan else "198.19.0.11"}
        for host, ip in (("a", "198.19.0.20"), ("b", "198.19.0.21")):
            if kinds[host] == "public":
                self.local[host], self.public_ip[host] = (ip, 9443), ip
        self.same_lan = same_lan
        self.mtu_blackhole = mtu_blackhole
        self.mappings: dict[tuple[str, tuple], int] = {}  # (host, destination) -> public port
        self.allowed: set[tuple[str, int, tuple]] = set()  # (host, public port, remote) the host sent to
        self.ports = itertools.count(40000)
        self.delivered = self.dropped = 0

    def outside(self, host: str, dst: tuple) -> tuple[str, int]:
        """The source the world sees when `host` sends to `dst` (creating the mapping)."""
        kind = self.kinds[host]
        if kind == "public":
            return self.local[host]
        key = (host, dst if kind == "hard" else None)
        if key not in self.mappings:
            taken = {p for (h, _), p in self.mappings.items() if self.public_ip[h] == self.public_ip[host]}
            self.mappings[key] = 9443 if kind == "easy" and 9443 not in taken else next(self.ports)
        port = self.mappings[key]
        self.allowed.add((host, port, dst))
        return (self.public_ip[host], port)

    def send(self, src: str, dst: tuple, size: int) -> tuple[str, tuple, float] | None:
        """-> (destination host, source as it sees it, latency), or None when dropped."""
        if self.mtu_blackhole and size > 1000:
            self.dropped += 1
            return None
        other = "b" if src == "a" else "a"
        if self.same_lan and dst == self.local[other]:
            self.delivered += 1
            return other, self.local[src], LAN_LATENCY
        if dst[0] == self.local[src][0]:
            return None
        seen = self.outside(src, dst) if not (self.same_lan and dst[0] == self.public_ip[src]) else None
        if seen is None:  # to our own NAT's public address: no hairpin
            self.dropped += 1
            return None
        if self.kinds[other] == "public":
            if dst == self.local[other]:
                self.delivered += 1
                return other, seen, WAN_LATENCY
            self.dropped += 1
            return None
        if dst[0] != self.public_ip[other]:
            self.dropped += 1
            return None
        # the other's NAT: only a reply to what the inside sent from that port to exactly `seen`
        if (other, dst[1], seen) in self.allowed:
            self.delivered += 1
            return other, seen, WAN_LATENCY
        self.dropped += 1
        return None


class Sim:
    """Two Punch machines, a hub that relays CALLs, and the Net; runs on a fake clock."""

    def __init__(
        self, net: Net, nat_a=NatClass.EASY, nat_b=NatClass.EASY, lose_calls: int = 0, start_b_at: float = 0.0
    ) -> None:
        self.net = net
        self.now = 0.0
        self.nat = {"a": nat_a, "b": nat_b}
        self.punch = {
            "a": Punch(A_ID, B_ID, new_txid=txids(), full_size=FULL, small_size=SMALL),
            "b": Punch(B_ID, A_ID, new_txid=txids(), full_size=FULL, small_size=SMALL),
        }
        self.queue: list = []
        self.seq = itertools.count()
        self.lose_calls = lose_calls
        self.start_b_at = start_b_at
        self.events: dict[str, list] = {"a": [], "b": []}
        self.calls_sent = 0
        self.probes_sent = {"a": 0, "b": 0}
        # what each side knows of the other before any CALL: the netmap's observed address and
        # the reported LAN address (what meshadmin lists)
        for me, other in (("a", "b"), ("b", "a")):
            cands = [
                Candidate(K.CONFIGURED, *net.local[other]),
                Candidate(K.OBSERVED, net.public_ip[other], 9443),
            ]
            self.punch[me].merge_candidates(cands, 0.0)

    def ours(self, host: str) -> list[Candidate]:
        out = [Candidate(K.LOCAL, *self.net.local[host])]
        if self.net.kinds[host] != "public":
            # what a hub saw (for a hard NAT, a port only that hub will ever be sent from)
            port = 9443 if self.net.kinds[host] == "easy" else 31337
            out.append(Candidate(K.REFLEXIVE, self.net.public_ip[host], port))
        return out

    def at(self, t: float, fn) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), fn))

    def handle(self, host: str, events: list) -> None:
        other = "b" if host == "a" else "a"
        for ev in events:
            self.events[host].append((self.now, ev))
            if isinstance(ev, SendCall):
                self.calls_sent += 1
                if self.lose_calls > 0:
                    self.lose_calls -= 1
                    continue
                self.at(
                    self.now + RELAY_LATENCY / 2,
                    lambda c=ev.call, o=other: self.handle(
                        o, self.punch[o].on_call(c, self.now, ours=self.ours(o), nat=self.nat[o])
                    ),
                )
            elif isinstance(ev, SendProbe):
                self.probes_sent[host] += 1
                got = self.net.send(host, ev.addr, ev.size)
                if got is not None:
                    dst, seen, lat = got
                    self.at(
                        self.now + lat, lambda d=dst, s=seen, e=ev, src=host: self.probe_arrives(d, s, e, src)
                    )

    def probe_arrives(self, host: str, source: tuple, probe: SendProbe, prober: str) -> None:
        # the I/O answers every authenticated probe with an ACK to its source, then tells the punch
        back = self.net.send(host, source, SMALL)
        if back is not None:
            _dst, seen, lat = back
            self.at(
                self.now + lat,
                lambda: self.handle(
                    prober, self.punch[prober].on_ack(probe.txid, probe.sequence, seen, self.now)
                ),
            )
        self.handle(host, self.punch[host].on_probe_from(source, self.now))

    def run(self, until: float, step: float = 0.01) -> None:
        while self.now < until:
            while self.queue and self.queue[0][0] <= self.now:
                _t, _s, fn = heapq.heappop(self.queue)
                fn()
            for host in ("a", "b"):
                if host == "b" and self.now < self.start_b_at:
                    continue
                self.handle(
                    host,
                    self.punch[host].tick(self.now, wanted=True, ours=self.ours(host), nat=self.nat[host]),
                )
            self.now = round(self.now + step, 6)

    def validated(self, host: str) -> Validated | None:
        return next((ev for _t, ev in self.events[host] if isinstance(ev, Validated)), None)

    def failures(self, host: str) -> list[tuple[float, str]]:
        return [(t, ev.reason) for t, ev in self.events[host] if isinstance(ev, Failed)]


def test_easy_with_easy_meets_on_the_public_addresses_within_one_attempt():
    sim = Sim(Net({"a": "easy", "b": "easy"}))
    sim.run(2.0)
    va, vb = sim.validated("a"), sim.validated("b")
    assert va.addr == ("198.19.0.11", 9443) and vb.addr == ("198.19.0.10", 9443)
    assert sim.punch["a"].state is State.DIRECT and sim.punch["b"].state is State.DIRECT
    assert sim.failures("a") == sim.failures("b") == []
    # the whole thing took the CALL exchange, a relay round trip and a few probes, not the 3 s window
    t_a = next(t for t, ev in sim.events["a"] if isinstance(ev, Validated))
    assert t_a < 0.5


def test_both_offer_at_once_and_the_lower_id_stays_the_initiator():
    sim = Sim(Net({"a": "easy", "b": "easy"}))
    sim.run(1.0)
    offers = {
        h: [
            ev.call.txid
            for _t, ev in sim.events[h]
            if isinstance(ev, SendCall) and ev.call.kind is CallKind.OFFER
        ]
        for h in "ab"
    }
    answers = {
        h: [
            ev.call.txid
            for _t, ev in sim.events[h]
            if isinstance(ev, SendCall) and ev.call.kind is CallKind.ANSWER
        ]
        for h in "ab"
    }
    assert offers["a"] and offers["b"]  # both started...
    assert answers["a"] == [] and answers["b"] == offers["a"][:1]  # ...b answered a's offer, not a b's
    assert sim.validated("a") and sim.validated("b")


def test_the_initiator_waits_half_the_relay_round_trip_so_both_start_together():
    sim = Sim(Net({"a": "easy", "b": "easy"}), start_b_at=10.0)  # b never offers: a initiates
    sim.run(1.0)
    go = next(t for t, ev in sim.events["a"] if isinstance(ev, SendCall) and ev.call.kind is CallKind.GO)
    first_a = next(t for t, ev in sim.events["a"] if isinstance(ev, SendProbe))
    first_b = next(t for t, ev in sim.events["b"] if isinstance(ev, SendProbe))
    assert first_a == pytest.approx(go + RELAY_LATENCY / 2, abs=0.011)
    assert first_b == pytest.approx(go + RELAY_LATENCY / 2, abs=0.011)
    assert sim.validated("a").addr == ("198.19.0.11", 9443)


def test_hosts_behind_one_nat_meet_on_the_lan_address():
    sim = Sim(Net({"a": "easy", "b": "easy"}, same_lan=True))
    sim.run(2.0)
    assert sim.validated("a").addr == ("198.18.10.3", 9443)
    assert sim.validated("a").kind in (K.LOCAL, K.CONFIGURED)
    assert sim.validated("b").addr == ("198.18.10.2", 9443)


@pytest.mark.parametrize("kinds", [("public", "easy"), ("easy", "public")])
def test_a_public_node_and_a_nat_meet(kinds):
    sim = Sim(
        Net({"a": kinds[0], "b": kinds[1]}),
        nat_a=NatClass.PUBLIC if kinds[0] == "public" else NatClass.EASY,
        nat_b=NatClass.PUBLIC if kinds[1] == "public" else NatClass.EASY,
    )
    sim.run(2.0)
    assert sim.validated("a") and sim.validated("b")


def test_easy_with_hard_fails_and_backs_off_doubling():
    sim = Sim(Net({"a": "easy", "b": "hard"}), nat_b=NatClass.HARD)
    sim.run(60.0)
    assert sim.validated("a") is None and sim.validated("b") is None
    fails = sim.failures("a")
    assert [r for _t, r in fails] == ["punch_timeout"] * len(fails)
    starts = [t for t, ev in sim.events["a"] if isinstance(ev, SendCall) and ev.call.kind is CallKind.OFFER]
    gaps = [b - a for a, b in itertools.pairwise(sorted(set(starts)))]
    # each failure waits BACKOFF_S[n] after the PROBE_DURATION_S window (plus the exchange)
    assert len(gaps) >= 2
    for n, gap in enumerate(gaps[:3]):
        assert BACKOFF_S[n] + PROBE_DURATION_S <= gap < BACKOFF_S[n] + PROBE_DURATION_S + 0.5


def test_two_hard_nats_never_probe_and_say_why():
    sim = Sim(Net({"a": "hard", "b": "hard"}), nat_a=NatClass.HARD, nat_b=NatClass.HARD)
    sim.punch["a"].remote_nat = sim.punch["b"].remote_nat = NatClass.UNKNOWN
    sim.run(30.0)
    assert sim.probes_sent == {"a": 0, "b": 0}
    assert sim.punch["a"].state is State.SKIPPED and sim.punch["b"].state is State.SKIPPED
    assert sim.punch["a"].last_reason == sim.punch["b"].last_reason == "both_hard"
    assert sim.calls_sent <= 4  # one exchange, then silence


def test_a_full_size_probe_must_pass_too():
    sim = Sim(Net({"a": "easy", "b": "easy"}, mtu_blackhole=True))
    sim.run(4.0)
    assert sim.validated("a") is None and sim.validated("b") is None
    assert ("198.19.0.11", 9443) in sim.punch["a"].answered or sim.failures("a")
    assert sim.failures("a")[0][1] == "punch_timeout"


def test_lost_offers_are_sent_again_then_given_up():
    p = Punch(A_ID, B_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    sent = []
    t = 0.0
    while t < OFFER_TRIES * OFFER_RETRY_S + 0.1:
        sent += p.tick(t, wanted=True, ours=[], nat=NatClass.EASY)
        t = round(t + 0.05, 3)
    offers = [e for e in sent if isinstance(e, SendCall)]
    assert len(offers) == OFFER_TRIES and len({e.call.txid for e in offers}) == 1
    assert [e.reason for e in sent if isinstance(e, Failed)] == ["no_answer"]
    assert p.state is State.WAIT and p.next_at == pytest.approx(t - 0.05 + BACKOFF_S[0], abs=0.06)


def test_one_lost_offer_costs_one_retry_and_no_more():
    sim = Sim(Net({"a": "easy", "b": "easy"}), lose_calls=1, start_b_at=10.0)
    sim.run(3.0)
    assert sim.validated("a") is not None


def test_a_responder_without_go_gives_up():
    p = Punch(B_ID, A_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    out = p.on_call(Call(CallKind.OFFER, b"T" * 8, NatClass.EASY, ()), 0.0, ours=[], nat=NatClass.EASY)
    assert [e.call.kind for e in out] == [CallKind.ANSWER] and p.state is State.ANSWERED
    assert p.tick(GO_TIMEOUT_S - 0.01, wanted=True, ours=[], nat=NatClass.EASY) == []
    assert [e.reason for e in p.tick(GO_TIMEOUT_S, wanted=True, ours=[], nat=NatClass.EASY)] == ["no_answer"]


def test_a_peer_cannot_keep_us_probing_with_new_offers():
    p = Punch(B_ID, A_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    cands = Call(CallKind.OFFER, b"\x01" * 8, NatClass.EASY, ()).candidates
    answered = 0
    for i in range(50):  # 5 s of offers, one every 0.1 s, each with its GO
        t = i * 0.1
        p.tick(t, wanted=False, ours=[], nat=NatClass.EASY)
        txid = i.to_bytes(8, "big")
        out = p.on_call(Call(CallKind.OFFER, txid, NatClass.EASY, cands), t, ours=[], nat=NatClass.EASY)
        answered += any(isinstance(e, SendCall) for e in out)
        p.on_call(Call(CallKind.GO, txid, NatClass.EASY, ()), t, ours=[], nat=NatClass.EASY)
    assert answered == 1  # the first attempt ended at 3 s, and still no second one before 5 s
    assert p.state is State.WAIT
    out = p.on_call(
        Call(CallKind.OFFER, b"\xff" * 8, NatClass.EASY, ()), MIN_INTERVAL_S, ours=[], nat=NatClass.EASY
    )
    assert out  # later, a new attempt is fine


def test_a_repeated_offer_gets_the_same_answer_again():
    p = Punch(B_ID, A_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    offer = Call(CallKind.OFFER, b"T" * 8, NatClass.EASY, ())
    first = p.on_call(offer, 0.0, ours=[], nat=NatClass.EASY)
    again = p.on_call(offer, 0.5, ours=[], nat=NatClass.EASY)
    assert first == again


def test_answers_and_gos_of_other_attempts_are_ignored():
    p = Punch(A_ID, B_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    p.tick(0.0, wanted=True, ours=[], nat=NatClass.EASY)
    assert (
        p.on_call(Call(CallKind.ANSWER, b"X" * 8, NatClass.EASY, ()), 0.1, ours=[], nat=NatClass.EASY) == []
    )
    assert p.on_call(Call(CallKind.GO, p.txid, NatClass.EASY, ()), 0.1, ours=[], nat=NatClass.EASY) == []
    assert p.state is State.OFFERED


def test_an_ack_for_another_txid_or_a_probe_never_sent_is_ignored():
    sim = Sim(Net({"a": "easy", "b": "easy"}), start_b_at=10.0)
    a = sim.punch["a"]
    while a.state is not State.PROBING:
        sim.run(sim.now + 0.01)
    assert a.on_ack(b"?" * 8, 1, ("198.19.0.11", 9443), sim.now) == []
    assert a.on_ack(a.txid, 999_999, ("198.19.0.11", 9443), sim.now) == []


def test_not_wanted_means_silent():
    p = Punch(A_ID, B_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    assert p.tick(100.0, wanted=False, ours=[], nat=NatClass.EASY) == []
    assert p.state is State.IDLE


def test_new_candidates_reset_the_backoff_but_not_below_the_minimum_interval():
    sim = Sim(Net({"a": "easy", "b": "hard"}), nat_b=NatClass.HARD)
    sim.run(20.0)  # a few failures: the backoff has grown
    a = sim.punch["a"]
    assert a.state is State.WAIT and a.failures >= 2
    assert a.merge_candidates([Candidate(K.REFLEXIVE, "198.19.0.11", 40404)], sim.now)
    assert a.failures == 0
    assert a.next_at == max(sim.now, a.last_start + MIN_INTERVAL_S)
    assert not a.merge_candidates([Candidate(K.REFLEXIVE, "198.19.0.11", 40404)], sim.now)  # not new


def test_a_lost_direct_path_is_tried_again_after_the_first_backoff_step():
    sim = Sim(Net({"a": "easy", "b": "easy"}))
    sim.run(1.0)
    a = sim.punch["a"]
    assert a.state is State.DIRECT
    a.path_lost(sim.now)
    assert a.state is State.WAIT and a.next_at == sim.now + BACKOFF_S[0] and a.last_reason == "direct_timeout"
    a.path_lost(sim.now + 1)  # only a direct path can be lost
    assert a.next_at == sim.now + BACKOFF_S[0]


def test_a_probe_from_the_peer_is_probed_back_at_once_from_its_source():
    p = Punch(B_ID, A_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    out = p.on_probe_from(("198.19.0.10", 50000), 1.0)
    assert p.state is State.PROBING
    assert [e.addr for e in out if isinstance(e, SendProbe)] == [("198.19.0.10", 50000)]
    assert p.remote.kind_of(("198.19.0.10", 50000)) is K.PEER_REFLEXIVE
    assert p.on_probe_from(("198.19.0.10", 50000), 1.1) == []  # known, already probed this attempt
    p.state = State.WAIT
    assert p.on_probe_from(("198.19.0.10", 50001), 2.0) == []  # no new attempt within MIN_INTERVAL_S


def test_stop_forgets_an_attempt_in_flight():
    sim = Sim(Net({"a": "easy", "b": "easy"}), start_b_at=10.0)
    a = sim.punch["a"]
    while a.state is not State.PROBING:
        sim.run(sim.now + 0.01)
    a.stop()
    assert a.state is State.WAIT and not a.sent


def test_probing_sends_a_round_per_interval_to_every_candidate_for_the_window():
    p = Punch(B_ID, A_ID, new_txid=txids(), full_size=FULL, small_size=SMALL)
    p.merge_candidates(
        [Candidate(K.OBSERVED, "198.19.0.99", 9443), Candidate(K.LOCAL, "198.18.99.2", 9443)], 0.0
    )
    p.on_call(Call(CallKind.OFFER, b"T" * 8, NatClass.EASY, ()), 0.0, ours=[], nat=NatClass.EASY)
    probes = [
        e
        for e in p.on_call(Call(CallKind.GO, b"T" * 8, NatClass.EASY, ()), 0.0, ours=[], nat=NatClass.EASY)
        if isinstance(e, SendProbe)
    ]
    t = 0.0
    while p.state is State.PROBING:
        t = round(t + 0.01, 3)
        probes += [e for e in p.tick(t, wanted=True, ours=[], nat=NatClass.EASY) if isinstance(e, SendProbe)]
    assert t == pytest.approx(PROBE_DURATION_S, abs=0.011)
    assert len(probes) == 2 * 15  # 2 candidates, a round every 0.2 s for 3 s
    assert {e.size for e in probes} == {SMALL}
    assert len({e.sequence for e in probes}) == len(probes)


def test_a_skipped_pair_stays_skipped_until_a_nat_class_changes():
    sim = Sim(Net({"a": "hard", "b": "hard"}), nat_a=NatClass.HARD, nat_b=NatClass.HARD)
    sim.run(10.0)
    a = sim.punch["a"]
    assert a.state is State.SKIPPED
    a.candidates_changed(sim.now)  # new candidates do not help two hard NATs
    assert a.state is State.SKIPPED
    assert a.tick(sim.now, wanted=True, ours=[], nat=NatClass.HARD) == []
    a.tick(sim.now, wanted=True, ours=[], nat=NatClass.EASY)  # we moved behind an easy NAT
    assert a.state is State.WAIT
    assert [e.call.kind for e in a.tick(sim.now + MIN_INTERVAL_S, wanted=True, ours=[], nat=NatClass.EASY)
            if isinstance(e, SendCall)] == [CallKind.OFFER]
