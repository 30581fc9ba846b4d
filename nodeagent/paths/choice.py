"""Which path a relayed peer's data takes: a proven direct path, or the cheapest relay. Pure:
time in, events out.

A `PathChoice` exists for each peer that has no direct control link (paths/select.py gives such a
peer a hub for its handshakes). Its data may take:
  - the direct path: an address proven by hole punching (punch.py `Validated`);
  - a relay path through any hub we hold keys with (`set_relays`); the netmap's relay first.

It probes every path it knows (`SendPathProbe`; the answers come back through `on_ack`) and keeps
each path's quality (quality.py). Rules, checked on every `tick`:
  1. A direct path is used as soon as it is validated, and kept while it is healthy: direct always
     wins over a relay, whatever their RTTs.
  2. The direct path is dead when its probes have gone unanswered for DEAD_AFTER_S (at least two
     of them): the data moves to the relay at once (`direct_timeout`), and the caller tells the
     punch (punch.py `path_lost`) to try again after its backoff. With probes every
     ACTIVE_PROBE_S while traffic flows, that is at most DEAD_AFTER_S + ACTIVE_PROBE_S after the
     last answer. Loss above DIRECT_MAX_LOSS over a full window also gives it up (`direct_loss`).
  3. Between relays: another relay replaces the current one only if its score (quality.py) is
     lower by at least SWITCH_GAIN (10 %) and SWITCH_MIN_MS (5 ms), in SWITCH_ROUNDS consecutive
     evaluations (one per EVAL_S), and the current choice is at least DWELL_S old. A dead
     current relay (as rule 2) is left at once for a live one (`relay_timeout`).
Probing: the path in use and, while traffic flows (`active`), every relay path: every
ACTIVE_PROBE_S for the direct path, RELAY_PROBE_S for relays; otherwise every IDLE_PROBE_S, which
also keeps the NAT mappings of an idle direct path open (well inside the 30 s an unanswered UDP
conntrack entry lives).

`history` keeps the last HISTORY changes as (time, path, reason) for status.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .quality import LOSS_WINDOW, PathQuality

__all__ = [
    "ACTIVE_PROBE_S",
    "DEAD_AFTER_S",
    "DIRECT",
    "DIRECT_MAX_LOSS",
    "DWELL_S",
    "EVAL_S",
    "HISTORY",
    "IDLE_PROBE_S",
    "LOST_AFTER_S",
    "RELAY_PROBE_S",
    "SWITCH_GAIN",
    "SWITCH_MIN_MS",
    "SWITCH_ROUNDS",
    "PathChanged",
    "PathChoice",
    "SendPathProbe",
]

DIRECT = "direct"
ACTIVE_PROBE_S = 0.5
RELAY_PROBE_S = 1.0
IDLE_PROBE_S = 10.0
LOST_AFTER_S = 1.0
DEAD_AFTER_S = 2.0
DIRECT_MAX_LOSS = 0.2
EVAL_S = 1.0
SWITCH_GAIN = 0.10
SWITCH_MIN_MS = 5.0
SWITCH_ROUNDS = 3
DWELL_S = 10.0
HISTORY = 16


@dataclass(frozen=True, slots=True)
class SendPathProbe:
    """Probe `path` (DIRECT: to the direct address; else through that hub's peer id)."""

    path: str
    txid: bytes
    sequence: int


@dataclass(frozen=True, slots=True)
class PathChanged:
    path: str | None  # DIRECT, a hub's peer id, or None (no path at all)
    reason: str


ChoiceEvent = SendPathProbe | PathChanged


class _Path:
    __slots__ = ("first_unanswered", "quality", "seq", "txid", "unanswered")

    def __init__(self, txid: bytes) -> None:
        self.txid = txid
        self.quality = PathQuality()
        self.seq = 0
        self.first_unanswered: float | None = None  # first probe sent since the last answer
        self.unanswered = 0

    def dead(self, now: float) -> bool:
        return (
            self.unanswered >= 2
            and self.first_unanswered is not None
            and now - self.first_unanswered >= DEAD_AFTER_S
        )


class PathChoice:
    def __init__(self, *, new_txid: Callable[[], bytes], default_relay: str | None, now: float) -> None:
        self.new_txid = new_txid
        self.paths: dict[str, _Path] = {}
        self.direct_addr: tuple[str, int] | None = None
        self.direct_kind: str | None = None  # "lan" or "punched"
        self.current: str | None = None
        self.default_relay = default_relay
        self.since = now
        self.history: deque[tuple[float, str | None, str]] = deque(maxlen=HISTORY)
        self.changes = 0
        self.better: tuple[str, int] | None = None  # relay that beat the current one, rounds in a row
        self.next_eval = now
        self.reason = "relay"
        if default_relay is not None:
            self.paths[default_relay] = _Path(new_txid())
            self._change(default_relay, "relay", now)

    # --- inputs -----------------------------------------------------------------------------
    def set_relays(self, hubs: Iterable[str], default: str | None, now: float) -> list[ChoiceEvent]:
        """The hubs we may relay through now (keys held), and the netmap's choice among them."""
        hubs = set(hubs)
        self.default_relay = default
        for h in hubs - self.paths.keys():
            self.paths[h] = _Path(self.new_txid())
        for h in [p for p in self.paths if p != DIRECT and p not in hubs]:
            del self.paths[h]
        if self.current is not None and self.current not in self.paths:
            return self._change(self._best_relay(now), "relay_gone", now)
        if self.current is None:
            best = DIRECT if DIRECT in self.paths else self._best_relay(now)
            if best is not None:
                return self._change(best, "relay", now)
        return []

    def validated(self, addr: tuple[str, int], kind: str, now: float) -> list[ChoiceEvent]:
        """The punch proved a direct path at `addr` (`kind`: "lan" or "punched")."""
        self.direct_addr, self.direct_kind = addr, kind
        path = self.paths.get(DIRECT)
        if path is None:
            path = self.paths[DIRECT] = _Path(self.new_txid())
        path.first_unanswered, path.unanswered = None, 0
        path.quality.last_ack = path.quality.last_sent = now
        if self.current != DIRECT:
            return self._change(DIRECT, "validated", now)
        return []

    def on_ack(self, txid: bytes, sequence: int, now: float) -> float | None:
        """An answer to one of our path probes; the RTT sample, or None if it is not ours."""
        for path in self.paths.values():
            if path.txid == txid:
                rtt = path.quality.acked(sequence, now)
                if rtt is not None:
                    path.first_unanswered, path.unanswered = None, 0
                return rtt
        return None

    def forget_direct(self, now: float, reason: str) -> list[ChoiceEvent]:
        """The direct path is gone for another reason (a new identity, the peer left the relay)."""
        self.paths.pop(DIRECT, None)
        self.direct_addr = self.direct_kind = None
        if self.current == DIRECT:
            return self._change(self._best_relay(now), reason, now)
        return []

    # --- timers -----------------------------------------------------------------------------
    def tick(self, now: float, *, active: bool) -> list[ChoiceEvent]:
        out: list[ChoiceEvent] = []
        for key, path in self.paths.items():
            path.quality.expire(now, LOST_AFTER_S)
            last = path.quality.last_sent
            if last is None or now - last >= self._interval(key, active):
                path.seq = (path.seq + 1) & 0xFFFFFFFF
                path.quality.sent(path.seq, now)
                if path.first_unanswered is None:
                    path.first_unanswered = now
                path.unanswered += 1
                out.append(SendPathProbe(key, path.txid, path.seq))
        direct = self.paths.get(DIRECT)
        if direct is not None:
            q = direct.quality
            if direct.dead(now):
                out += self.forget_direct(now, "direct_timeout")
            elif len(q.results) >= LOSS_WINDOW and (q.loss or 0.0) > DIRECT_MAX_LOSS:
                out += self.forget_direct(now, "direct_loss")
            elif self.current != DIRECT:
                out += self._change(DIRECT, "validated", now)
            return out
        if now >= self.next_eval:
            self.next_eval = now + EVAL_S
            out += self._evaluate(now)
        return out

    def _interval(self, key: str, active: bool) -> float:
        if not active:
            return IDLE_PROBE_S
        if key == DIRECT:
            return ACTIVE_PROBE_S
        return RELAY_PROBE_S

    def _best_relay(self, now: float) -> str | None:
        live = [
            (p.quality.score(), k)
            for k, p in self.paths.items()
            if k != DIRECT and not p.dead(now) and p.quality.score() is not None
        ]
        if live:
            return min(live)[1]
        if self.default_relay in self.paths:
            return self.default_relay
        relays = sorted(k for k in self.paths if k != DIRECT)
        return relays[0] if relays else None

    def _evaluate(self, now: float) -> list[ChoiceEvent]:
        cur = self.paths.get(self.current) if self.current is not None else None
        if cur is None:
            best = self._best_relay(now)
            return self._change(best, "relay", now) if best is not None else []
        if cur.dead(now):
            best = self._best_relay(now)
            if best is not None and best != self.current and not self.paths[best].dead(now):
                return self._change(best, "relay_timeout", now)
            return []
        cur_score = cur.quality.score()
        best = self._best_relay(now)
        best_score = None if best is None else self.paths[best].quality.score()
        if (
            best is None
            or best == self.current
            or cur_score is None
            or best_score is None
            or not (best_score <= cur_score * (1 - SWITCH_GAIN) and cur_score - best_score >= SWITCH_MIN_MS)
        ):
            self.better = None
            return []
        rounds = self.better[1] + 1 if self.better is not None and self.better[0] == best else 1
        self.better = (best, rounds)
        if rounds >= SWITCH_ROUNDS and now - self.since >= DWELL_S:
            return self._change(best, "cheaper_relay", now)
        return []

    def _change(self, path: str | None, reason: str, now: float) -> list[ChoiceEvent]:
        if path == self.current:
            return []
        self.current = path
        self.since = now
        self.reason = reason
        self.better = None
        self.changes += 1
        self.history.append((now, path, reason))
        return [PathChanged(path, reason)]

    # --- status -----------------------------------------------------------------------------
    def rtt_ms(self, key: str) -> float | None:
        p = self.paths.get(key)
        return None if p is None else p.quality.rtt_ms()
