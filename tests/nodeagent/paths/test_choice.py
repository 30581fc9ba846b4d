"""The data path of a relayed peer (paths/choice.py) on a fake clock: direct first when proven, fallback
when it stops answering, the cheapest relay with hysteresis and dwell, probe schedules."""

from __future__ import annotations

import itertools

import pytest

from nodeagent.paths.choice import (
    ACTIVE_PROBE_S,
    DEAD_AFTER_S,
    DIRECT,
    DWELL_S,
    HISTORY,
    IDLE_PROBE_S,
    RELAY_PROBE_S,
    SWITCH_ROUNDS,
    PathChanged,
    PathChoice,
    SendPathProbe,
)

H1, H2, H3 = "11" * 20, "22" * 20, "33" * 20
ADDR = ("198.19.0.11", 9443)
STEP = 0.05


def txids():
    n = itertools.count(1)
    return lambda: next(n).to_bytes(8, "big")


class World:
    """Answers probes per path after `rtt[path]` seconds unless the path is `down`."""

    def __init__(self, choice: PathChoice, rtt: dict[str, float], step: float = STEP) -> None:
        self.step = step
        self.choice = choice
        self.rtt = rtt
        self.down: set[str] = set()
        self.now = 0.0
        self.inflight: list[tuple[float, bytes, int]] = []
        self.changes: list[tuple[float, PathChanged]] = []
        self.probes: list[tuple[float, SendPathProbe]] = []

    def run(self, until: float, active: bool = True) -> None:
        while self.now < until - 1e-9:
            self.now = round(self.now + self.step, 6)
            for item in [i for i in self.inflight if i[0] <= self.now + 1e-9]:
                self.inflight.remove(item)
                self.choice.on_ack(item[1], item[2], self.now)
            for ev in self.choice.tick(self.now, active=active):
                if isinstance(ev, SendPathProbe):
                    self.probes.append((self.now, ev))
                    if ev.path not in self.down:
                        self.inflight.append((self.now + self.rtt[ev.path], ev.txid, ev.sequence))
                else:
                    self.changes.append((self.now, ev))


def test_starts_on_the_netmaps_relay():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    assert c.current == H1 and c.reason == "relay" and list(c.history) == [(0.0, H1, "relay")]
    assert PathChoice(new_txid=txids(), default_relay=None, now=0.0).current is None


def test_a_validated_direct_path_is_taken_at_once_even_if_a_relay_is_faster():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    w = World(c, {H1: 0.001, DIRECT: 0.050})
    w.run(3.0)
    assert c.validated(ADDR, "punched", w.now) == [PathChanged(DIRECT, "validated")]
    w.run(30.0)
    assert c.current == DIRECT and [e.reason for _t, e in w.changes] == []
    assert c.rtt_ms(DIRECT) == pytest.approx(50.0, abs=1)


def test_a_direct_path_that_stops_answering_falls_back_within_3_s():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    w = World(c, {H1: 0.02, DIRECT: 0.01})
    c.validated(ADDR, "punched", 0.0)
    w.run(10.0)
    w.down.add(DIRECT)
    quality = c.paths[DIRECT].quality
    w.run(20.0)
    ((t, ev),) = w.changes
    assert ev == PathChanged(H1, "direct_timeout") and c.current == H1
    # from the last answer: at most one probe interval, then DEAD_AFTER_S (the docs' bound, < 3 s)
    assert t - quality.last_ack <= DEAD_AFTER_S + ACTIVE_PROBE_S + STEP
    assert DIRECT not in c.paths and c.direct_addr is None


def test_one_lost_probe_does_not_kill_a_direct_path():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    w = World(c, {H1: 0.02, DIRECT: 0.01})
    c.validated(ADDR, "punched", 0.0)
    w.run(5.0)
    w.down.add(DIRECT)
    w.run(5.0 + ACTIVE_PROBE_S)  # one probe lost
    w.down.clear()
    w.run(30.0)
    assert w.changes == [] and c.current == DIRECT


def test_a_lossy_direct_path_is_given_up():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    w = World(c, {H1: 0.02, DIRECT: 0.01})
    c.validated(ADDR, "punched", 0.0)
    sent = itertools.count()

    def lossy(now, *, active, _tick=c.tick):  # every third probe of the direct path lost
        out = _tick(now, active=active)
        for ev in out:
            if isinstance(ev, SendPathProbe) and ev.path == DIRECT and next(sent) % 3 == 0:
                w.down.add(DIRECT)
        return out

    c.tick = lossy
    orig = w.run

    def run(until, active=True):
        while w.now < until - 1e-9:
            orig(w.now + STEP, active)
            w.down.discard(DIRECT)

    run(20.0)
    assert [e.reason for _t, e in w.changes] == ["direct_loss"]


def test_idle_paths_are_probed_slowly_and_busy_ones_fast():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    w = World(c, {H1: 0.01, DIRECT: 0.01})
    c.validated(ADDR, "punched", 0.0)
    w.run(30.0, active=False)
    idle = [t for t, p in w.probes if p.path == DIRECT]
    assert all(b - a == pytest.approx(IDLE_PROBE_S, abs=STEP) for a, b in itertools.pairwise(idle))
    w.probes.clear()
    w.run(40.0, active=True)
    busy = [t for t, p in w.probes if p.path == DIRECT]
    relay = [t for t, p in w.probes if p.path == H1]
    assert len(busy) == pytest.approx(10 / ACTIVE_PROBE_S, abs=2)
    assert len(relay) == pytest.approx(10 / RELAY_PROBE_S, abs=2)


def test_an_idle_direct_path_that_died_is_noticed_soon_after_traffic_resumes():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    w = World(c, {H1: 0.01, DIRECT: 0.01})
    c.validated(ADDR, "punched", 0.0)
    w.run(30.0, active=False)
    w.down.add(DIRECT)
    w.run(35.0, active=False)  # dies while idle: one unanswered idle probe is not enough
    assert c.current == DIRECT
    w.run(40.0, active=True)
    ((t, ev),) = w.changes
    assert ev.reason == "direct_timeout" and t <= 35.0 + DEAD_AFTER_S + 2 * ACTIVE_PROBE_S


def test_a_cheaper_relay_wins_only_after_three_rounds_and_the_dwell_time():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    c.set_relays([H1, H2], H1, 0.0)
    w = World(c, {H1: 0.080, H2: 0.020})
    w.run(30.0)
    ((t, ev),) = w.changes
    assert ev == PathChanged(H2, "cheaper_relay")
    assert t >= DWELL_S and t >= SWITCH_ROUNDS  # never before the dwell time and three evaluations


@pytest.mark.parametrize(("h1", "h2"), [(0.050, 0.046), (0.010, 0.0061), (0.050, 0.050)])
def test_a_small_gain_never_switches(h1, h2):
    """Below 10 % or below 5 ms of gain the current relay stays (hysteresis)."""
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    c.set_relays([H1, H2], H1, 0.0)
    w = World(c, {H1: h1, H2: h2}, step=0.0005)
    w.run(60.0)
    assert w.changes == []


def test_relays_that_alternate_do_not_make_the_choice_flap():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    c.set_relays([H1, H2], H1, 0.0)
    w = World(c, {H1: 0.020, H2: 0.020})
    for i in range(60):  # every 2 s the other relay is 30 ms faster
        fast, slow = (H1, H2) if i % 2 else (H2, H1)
        w.rtt[fast], w.rtt[slow] = 0.010, 0.040
        w.run(w.now + 2.0)
    assert len(w.changes) <= 120 / DWELL_S  # at most one change per dwell time...
    assert len(w.changes) <= 3  # ...and in fact the smoothed scores hardly move


def test_a_dead_relay_is_left_at_once_for_a_live_one():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    c.set_relays([H1, H2], H1, 0.0)
    w = World(c, {H1: 0.010, H2: 0.030})
    w.run(3.0)
    w.down.add(H1)
    w.run(8.0)
    ((t, ev),) = w.changes
    assert ev == PathChanged(H2, "relay_timeout") and t < 3.0 + DEAD_AFTER_S + RELAY_PROBE_S + 1.0


def test_a_relay_that_goes_away_is_replaced_and_a_new_one_is_probed():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    c.set_relays([H1, H2], H1, 0.0)
    assert c.set_relays([H2, H3], H2, 1.0) == [PathChanged(H2, "relay_gone")]
    assert set(c.paths) == {H2, H3}
    c.validated(ADDR, "punched", 2.0)
    assert c.set_relays([H3], H3, 3.0) == []  # on direct: nothing to change
    assert set(c.paths) == {DIRECT, H3}
    assert c.forget_direct(4.0, "reset") == [PathChanged(H3, "reset")]


def test_history_is_bounded_and_counts_every_change():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    for i in range(40):
        c.validated(ADDR, "punched", float(i))
        c.forget_direct(float(i) + 0.5, "direct_timeout")
    assert len(c.history) == HISTORY and c.changes == 81
    assert c.history[-1] == (39.5, H1, "direct_timeout")


def test_answers_to_probes_of_other_paths_or_peers_are_ignored():
    c = PathChoice(new_txid=txids(), default_relay=H1, now=0.0)
    assert c.on_ack(b"nope" * 2, 1, 1.0) is None
