"""Hole punching with one peer: exchange candidates through the hub, start together, probe. Pure: time in,
events out.

Both sides keep a `Punch` for each other. The exchange (CALL frames, sealed end to end and carried
through the hub that already relays the pair's data, so the hub can neither read nor change them):

    initiator                         hub                         responder
    OFFER(txid, our candidates, NAT class)  ───────────────────►  takes the candidates
                 ◄───────────────────  ANSWER(txid, its candidates, NAT class)
    relay RTT = now - OFFER sent
    GO(txid)   ───────────────────────────────────────────────►  starts probing at once
    starts probing RTT/2 later: both first probes leave at about the same moment

Either side may start (`tick`, when the caller says the peer is `wanted`: it has keys and goes
through a relay); when both OFFER at once, the lower peer id stays the initiator and the other
answers. A pair of HARD NATs is not tried (natclass.py): both answer and stop, reason `both_hard`.

Probing (PROBING): a round every PROBE_INTERVAL_S, one PROBE to every candidate of the peer, for
PROBE_DURATION_S. A PROBE_ACK from address X (the address the peer's answer came from) means our
probe got there and its answer got back: X is answered. Then one full-size probe (`full_size`,
the size of the largest data frame) must be answered on X too, so a path that drops big frames
(an MTU black hole) is never taken. Then `Validated(X)`: the first pair answered in both
directions wins. An authenticated probe from the peer that comes from an address we did not
know becomes a peer-reflexive candidate and is probed back at once (`on_probe_from`).

Failure (no candidate answered, no ANSWER after OFFER_TRIES offers, no GO): `Failed(reason)`,
then silence for a backoff: BACKOFF_S[0], doubling per failure to BACKOFF_S[-1]. The silence
also clears the stale conntrack entries of NAT boxes that accept unsolicited packets (unreplied
UDP entries live 30 s): the deadlock those entries cause needs both sides silent, and the
synchronised start makes it unlikely in the first place. New candidates on either side
(`candidates_changed`) or a lost direct path (`path_lost`) reset the backoff, but a new attempt
never starts sooner than MIN_INTERVAL_S after the previous one, and a peer's new OFFERs are
answered at most once per MIN_INTERVAL_S: a peer cannot keep us probing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..protocol.disco import Call, CallKind, CandidateKind, NatClass, WireCandidate
from .candidates import MAX_CANDIDATES, Candidate, CandidateSet
from .natclass import should_punch

__all__ = [
    "BACKOFF_S",
    "GO_TIMEOUT_S",
    "MIN_INTERVAL_S",
    "OFFER_RETRY_S",
    "OFFER_TRIES",
    "PROBE_DURATION_S",
    "PROBE_INTERVAL_S",
    "Failed",
    "Punch",
    "SendCall",
    "SendProbe",
    "State",
    "Validated",
]

PROBE_INTERVAL_S = 0.2
PROBE_DURATION_S = 3.0
OFFER_RETRY_S = 1.0
OFFER_TRIES = 3
GO_TIMEOUT_S = 3.0
MIN_INTERVAL_S = 5.0
BACKOFF_S = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)
MAX_HALF_RTT_S = 1.0  # a relay RTT above 2 s is not waited out in full


class State(enum.Enum):
    IDLE = "idle"  # not wanted, or never tried
    WAIT = "wait"  # backing off until `next_at`
    OFFERED = "offered"  # initiator: OFFER sent, waiting for the ANSWER
    ANSWERED = "answered"  # responder: ANSWER sent, waiting for GO
    PROBING = "probing"
    DIRECT = "direct"  # validated; liveness is the path choice's job
    SKIPPED = "skipped"  # both sides behind hard NATs


@dataclass(frozen=True, slots=True)
class SendCall:
    """Send this CALL to the peer through the hub."""

    call: Call


@dataclass(frozen=True, slots=True)
class SendProbe:
    """Send a PROBE to the peer at `addr` directly (`size`: payload bytes, padding included)."""

    addr: tuple[str, int]
    txid: bytes
    sequence: int
    size: int


@dataclass(frozen=True, slots=True)
class Validated:
    addr: tuple[str, int]
    rtt: float
    kind: CandidateKind | None  # the kind of the candidate at `addr`, if it was one


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str  # "punch_timeout", "no_candidates", "no_answer", "both_hard"


PunchEvent = SendCall | SendProbe | Validated | Failed


class Punch:
    def __init__(
        self, our_id: str, peer_id: str, *, new_txid: Callable[[], bytes], full_size: int, small_size: int
    ) -> None:
        """`new_txid()`: 8 fresh random bytes; `full_size`/`small_size`: probe payload sizes."""
        self.our_id = our_id
        self.peer_id = peer_id
        self.new_txid = new_txid
        self.full_size = full_size
        self.small_size = small_size
        self.remote = CandidateSet()
        self.remote_nat = NatClass.UNKNOWN
        self.state = State.IDLE
        self.next_at = 0.0  # WAIT: the next attempt may start then
        self.failures = 0
        self.last_start: float | None = None  # an attempt (OFFER, or probing on a peer's request) began
        self.last_answered: float | None = None  # we answered a new OFFER of the peer
        self.txid = b""
        self.sent_at = 0.0  # OFFERED: last OFFER sent
        self.offers = 0
        self.deadline = 0.0  # ANSWERED: GO expected by then; PROBING: give up then
        self.probe_at = 0.0  # PROBING: next round
        self.seq = 0
        self.sent: dict[int, tuple[tuple[str, int], bool, float]] = {}  # sequence -> (address, full-size, at)
        self.answered: dict[tuple[str, int], float] = {}  # address -> RTT of its first answer
        self.last_reason: str | None = None

    # --- helpers ----------------------------------------------------------------------------
    def _call(self, kind: CallKind, ours: Iterable[Candidate], nat: NatClass) -> SendCall:
        wire = tuple(c.wire() for c in list(ours)[:MAX_CANDIDATES]) if kind is not CallKind.GO else ()
        return SendCall(Call(kind, self.txid, nat, wire))

    def _fail(self, now: float, reason: str) -> list[PunchEvent]:
        delay = BACKOFF_S[min(self.failures, len(BACKOFF_S) - 1)]
        self.failures += 1
        self.state = State.WAIT
        self.next_at = now + delay
        self.last_reason = reason
        self.sent.clear()
        self.answered.clear()
        return [Failed(reason)]

    def _start_probing(self, now: float, at: float) -> None:
        self.state = State.PROBING
        self.probe_at = at
        self.deadline = at + PROBE_DURATION_S
        self.sent.clear()
        self.answered.clear()

    def _probe(self, addr: tuple[str, int], full: bool, now: float) -> SendProbe:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.sent[self.seq] = (addr, full, now)
        return SendProbe(addr, self.txid, self.seq, self.full_size if full else self.small_size)

    def _round(self, now: float) -> list[PunchEvent]:
        out: list[PunchEvent] = []
        for addr in self.answered:  # answered: prove the full size
            out.append(self._probe(addr, True, now))
        for c in self.remote.ordered():
            if c.addr not in self.answered:
                out.append(self._probe(c.addr, False, now))
        return out

    # --- inputs -----------------------------------------------------------------------------
    def merge_candidates(self, candidates: Iterable[Candidate | WireCandidate], now: float) -> bool:
        """Candidates of the peer from the netmap (or anywhere but a CALL); True if any is new."""
        new = self.remote.merge(candidates, now)
        if new:
            self.candidates_changed(now)
        return new

    def candidates_changed(self, now: float) -> None:
        """New candidates on either side: try again soon (no sooner than MIN_INTERVAL_S after the
        last attempt began)."""
        self.failures = 0
        if self.state is State.WAIT:
            self.next_at = now if self.last_start is None else max(now, self.last_start + MIN_INTERVAL_S)

    def path_lost(self, now: float) -> None:
        """The direct path stopped answering: back to trying, after the first backoff step."""
        if self.state is State.DIRECT:
            self.state = State.WAIT
            self.next_at = now + BACKOFF_S[0]
            self.failures = 1
            self.last_reason = "direct_timeout"

    def stop(self) -> None:
        """Not wanted any more (keys gone, a direct control link came up): forget the attempt."""
        if self.state not in (State.IDLE, State.WAIT, State.SKIPPED):
            self.state = State.WAIT if self.last_start is not None else State.IDLE
        self.sent.clear()
        self.answered.clear()

    def tick(self, now: float, *, wanted: bool, ours: list[Candidate], nat: NatClass) -> list[PunchEvent]:
        """Timers. `wanted`: the peer has keys and is reached through a relay; `ours`: our
        candidates; `nat`: our NAT class."""
        st = self.state
        if st is State.SKIPPED:  # until one of the two NAT classes changes
            if should_punch(nat, self.remote_nat):
                self.state = State.WAIT
                self.next_at = now if self.last_start is None else max(now, self.last_start + MIN_INTERVAL_S)
            return []
        if st is State.DIRECT:
            return []
        if st in (State.IDLE, State.WAIT):
            if not wanted or now < self.next_at:
                return []
            if not should_punch(nat, self.remote_nat):
                self.state = State.SKIPPED
                self.last_reason = "both_hard"
                return [Failed("both_hard")]
            self.txid = self.new_txid()
            self.state = State.OFFERED
            self.sent_at = now
            self.offers = 1
            self.last_start = now
            return [self._call(CallKind.OFFER, ours, nat)]
        if st is State.OFFERED:
            if now - self.sent_at < OFFER_RETRY_S:
                return []
            if self.offers >= OFFER_TRIES:
                return self._fail(now, "no_answer")
            self.offers += 1
            self.sent_at = now
            return [self._call(CallKind.OFFER, ours, nat)]
        if st is State.ANSWERED:
            return self._fail(now, "no_answer") if now >= self.deadline else []
        # PROBING
        if now >= self.deadline:
            return self._fail(now, "punch_timeout" if len(self.remote) else "no_candidates")
        if now < self.probe_at:
            return []
        self.probe_at = max(self.probe_at + PROBE_INTERVAL_S, now)
        return self._round(now)

    def on_call(self, call: Call, now: float, *, ours: list[Candidate], nat: NatClass) -> list[PunchEvent]:
        """A CALL from the peer (authenticated, through the hub)."""
        if call.kind is CallKind.OFFER:
            return self._on_offer(call, now, ours, nat)
        if call.kind is CallKind.ANSWER:
            if self.state is not State.OFFERED or call.txid != self.txid:
                return []
            self._learn(call, now)
            if not should_punch(nat, self.remote_nat):
                self.state = State.SKIPPED
                self.last_reason = "both_hard"
                return [Failed("both_hard")]
            half = min(max(0.0, now - self.sent_at) / 2, MAX_HALF_RTT_S)
            self._start_probing(now, now + half)
            return [self._call(CallKind.GO, ours, nat)]
        # GO
        if self.state is not State.ANSWERED or call.txid != self.txid:
            return []
        self._start_probing(now, now)
        return self.tick(now, wanted=True, ours=ours, nat=nat)

    def _learn(self, call: Call, now: float) -> None:
        self.remote_nat = NatClass(call.nat)
        self.remote.merge(call.candidates, now)

    def _on_offer(self, call: Call, now: float, ours: list[Candidate], nat: NatClass) -> list[PunchEvent]:
        if call.txid == self.txid and self.state in (State.ANSWERED, State.PROBING, State.SKIPPED):
            return [self._call(CallKind.ANSWER, ours, nat)]  # our ANSWER was lost: again
        if self.state is State.OFFERED and self.our_id < self.peer_id:
            return []  # both offered: ours stands, the peer answers it
        if self.state is State.PROBING and call.txid != self.txid:
            return []  # one attempt at a time
        if self.last_answered is not None and now - self.last_answered < MIN_INTERVAL_S:
            return []  # a peer cannot keep us probing
        self.last_answered = now
        self.last_start = now
        self.txid = call.txid
        self._learn(call, now)
        if not should_punch(nat, self.remote_nat):
            self.state = State.SKIPPED
            self.last_reason = "both_hard"
            return [self._call(CallKind.ANSWER, ours, nat), Failed("both_hard")]
        self.state = State.ANSWERED
        self.deadline = now + GO_TIMEOUT_S
        return [self._call(CallKind.ANSWER, ours, nat)]

    def on_probe_from(self, addr: tuple[str, int], now: float) -> list[PunchEvent]:
        """An authenticated PROBE of the peer arrived from `addr` (it was answered already)."""
        if self.state is State.DIRECT:
            return []
        new = self.remote.add(CandidateKind.PEER_REFLEXIVE, addr[0], addr[1], now)
        if self.state is State.PROBING:
            if new and addr not in self.answered:
                return [self._probe(addr, False, now)]
            return []
        if self.last_start is not None and now - self.last_start < MIN_INTERVAL_S:
            return []
        # the peer is probing us: probe back without waiting for our own turn
        self.txid = self.new_txid()
        self.last_start = now
        self._start_probing(now, now)
        self.probe_at = now + PROBE_INTERVAL_S
        return self._round(now)

    def on_ack(self, txid: bytes, sequence: int, source: tuple[str, int], now: float) -> list[PunchEvent]:
        """A PROBE_ACK from the peer, received from `source`."""
        if self.state is not State.PROBING or txid != self.txid:
            return []
        entry = self.sent.pop(sequence, None)
        if entry is None:
            return []
        _addr, full, sent_at = entry
        if full:
            if source not in self.answered:
                return []
            self.state = State.DIRECT
            self.failures = 0
            self.last_reason = "validated"
            rtt = self.answered[source]
            self.sent.clear()
            return [Validated(source, rtt, self.remote.kind_of(source))]
        if source in self.answered:
            return []
        self.answered[source] = max(0.0, now - sent_at)
        return [self._probe(source, True, now)]
