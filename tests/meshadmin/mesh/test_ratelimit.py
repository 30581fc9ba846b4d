"""ratelimit.charge and ratelimit.refund: a budget that counts what it lets through, and gives back
what its caller refunds, to the window it was counted in (meshadmin/mesh/services/ratelimit.py)."""

from __future__ import annotations

import pytest

from meshadmin.mesh.services import ratelimit
from meshadmin.metrics import events

SCOPE = "agent_connect"


@pytest.fixture
def limit(settings):
    def set_limit(n: int) -> None:
        settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, SCOPE: n}

    return set_limit


@pytest.fixture
def at(monkeypatch):
    """at(t): ratelimit's clock reads t from now on."""

    def move(t: float) -> None:
        monkeypatch.setattr(ratelimit, "clock", lambda: t)

    return move


def count(key: str, t: float) -> int:
    window = int(t) // ratelimit.WINDOW_S
    return ratelimit.shared_cache().get(ratelimit._cache_key(SCOPE, key, ratelimit.WINDOW_S, window)) or 0


def test_the_budget_admits_its_limit_and_refuses_the_rest_without_counting_them(limit, at):
    limit(3)
    at(1_800_000_000.0)
    charges = [ratelimit.charge(SCOPE, "198.18.1.1") for _ in range(6)]
    assert [c.admitted for c in charges] == [True, True, True, False, False, False]
    assert [c.first_refusal for c in charges] == [False, False, False, True, False, False]
    assert count("198.18.1.1", 1_800_000_000.0) == 3  # the refusals were not counted
    assert ratelimit.charge(SCOPE, "198.18.1.2").admitted  # another key has its own budget


def test_a_refund_gives_its_place_back_to_the_next_event(limit, at):
    limit(2)
    at(1_800_000_000.0)
    first, second = ratelimit.charge(SCOPE, "198.18.1.3"), ratelimit.charge(SCOPE, "198.18.1.3")
    assert first.admitted and second.admitted
    assert not ratelimit.charge(SCOPE, "198.18.1.3").admitted
    ratelimit.refund(first)
    third = ratelimit.charge(SCOPE, "198.18.1.3")
    assert third.admitted
    assert not ratelimit.charge(SCOPE, "198.18.1.3").admitted
    # a refusal after a refund is not the window's first any more (audited once per window)
    ratelimit.refund(second)
    ratelimit.charge(SCOPE, "198.18.1.3")
    assert not ratelimit.charge(SCOPE, "198.18.1.3").first_refusal


def test_a_refund_goes_to_the_window_it_was_charged_in_never_to_a_later_one(limit, at):
    limit(2)
    window = 1_800_000_000 // ratelimit.WINDOW_S * ratelimit.WINDOW_S
    at(window + 59.5)  # the last half second of a window
    old = ratelimit.charge(SCOPE, "198.18.1.4")
    assert old.admitted and old.window_ends_at == window + 60
    at(window + 60.0)  # the next window
    new = [ratelimit.charge(SCOPE, "198.18.1.4") for _ in range(2)]
    assert all(c.admitted for c in new)
    ratelimit.refund(old)  # charged in the window before: no place given back in this one
    assert count("198.18.1.4", window + 60.0) == 2
    assert not ratelimit.charge(SCOPE, "198.18.1.4").admitted
    assert count("198.18.1.4", window + 59.5) == 1  # and the old window's count is left as it was
    # within its own window a refund is taken from the count it was charged to
    ratelimit.refund(new[0])
    assert count("198.18.1.4", window + 60.0) == 1


def test_a_refund_of_an_evicted_count_does_nothing(limit, at):
    limit(2)
    at(1_800_000_000.0)
    spent = ratelimit.charge(SCOPE, "198.18.1.5")
    ratelimit.shared_cache().delete(spent.cache_key)
    ratelimit.refund(spent)  # no error, and no negative count left behind
    assert count("198.18.1.5", 1_800_000_000.0) == 0


def test_refusals_are_counted_for_metrics(limit, at, monkeypatch):
    limit(1)
    at(1_800_000_000.0)
    seen: list[str] = []
    monkeypatch.setattr(events, "rate_limited", seen.append)
    for _ in range(3):
        ratelimit.charge(SCOPE, "198.18.1.6")
    assert seen == [SCOPE, SCOPE]


def test_unlimited_is_admitted_without_touching_the_cache(limit, monkeypatch):
    limit(0)

    def no_cache():
        raise AssertionError("an unlimited scope touched the cache")

    monkeypatch.setattr(ratelimit, "shared_cache", no_cache)
    spent = ratelimit.charge(SCOPE, "198.18.1.7")
    assert spent.admitted and spent.cache_key is None
    ratelimit.refund(spent)
