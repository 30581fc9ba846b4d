"""Per-source token buckets."""

from __future__ import annotations

import pytest

from nodeagent.discovery.budget import SourceBudgets, source_key, source_of


def test_burst_then_rate():
    b = SourceBudgets(rate=2, burst=5)
    assert [b.take("198.18.0.1", 0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take("198.18.0.2", 0)  # another source has its own bucket
    assert not b.take("198.18.0.1", 0.4)
    assert b.take("198.18.0.1", 0.5)  # one token back after 1/rate
    assert not b.take("198.18.0.1", 0.5)
    assert [b.take("198.18.0.1", 100) for _ in range(6)] == [True] * 5 + [False]  # capped at burst


def test_cost_and_refusal_spends_nothing():
    b = SourceBudgets(rate=1, burst=10)
    assert b.take("a", 0, cost=8)
    assert not b.take("a", 0, cost=3)
    assert b.take("a", 0, cost=2)


def test_sources_are_bounded():
    b = SourceBudgets(rate=1, burst=1, max_sources=3)
    for n in range(10):
        b.take(f"198.18.0.{n}", 0)
    assert len(b) == 3


def test_an_ipv6_slash64_is_one_source():
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:198.18.0.1") == "198.18.0.1"
    assert source_key("198.18.0.1") == "198.18.0.1"
    b = SourceBudgets(rate=1, burst=1)
    assert b.take("2001:db8:1:2::1", 0)
    assert not b.take("2001:db8:1:2::2", 0)


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        SourceBudgets(rate=0, burst=1)


@pytest.mark.parametrize(("peer", "source"), [
    ("198.18.0.7", "198.18.0.7"),
    ("::ffff:198.18.0.7", "198.18.0.7"),
    ("2001:db8:1:2::a", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("?", "?"),  # the server's name for a socket without a peer name
    ("not an address", "not an address"),
])
def test_the_source_a_peer_name_counts_as(peer, source):
    # what the request budgets and the DHT port's connection cap (server.py) both count by
    assert source_of(peer) == source
