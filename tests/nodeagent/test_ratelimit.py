"""nodeagent/ratelimit.py (pure): the token bucket every limit of the agent uses (`TokenBucket`), a
bounded table of them (`Buckets`), and what one source is to a per-source limit (`source_key`).
Clocks are plain numbers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodeagent import ratelimit
from nodeagent.control import admission
from nodeagent.discovery import budget
from nodeagent.discovery.budget import SourceBudgets
from nodeagent.ratelimit import Buckets, TokenBucket, source_key

# ----------------------------------------------------------------------------- TokenBucket


def test_a_bucket_starts_full_refills_at_its_rate_and_never_beyond_its_burst():
    b = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(100.25)  # half a token
    assert b.take(100.5) and not b.take(100.5)  # 2 per second: a whole token after 0.5 s
    assert [b.take(1000.0) for _ in range(4)] == [True, True, True, False]  # long idle: only the burst


def test_the_default_burst_is_a_tenth_of_a_seconds_worth_and_at_least_64():
    assert TokenBucket(10_000.0).burst == 1000.0
    assert TokenBucket(100.0).burst == 64.0
    assert TokenBucket(100.0, burst=5).burst == 5.0
    b = TokenBucket(10_000.0)
    assert sum(b.take(1.0) for _ in range(1500)) == 1000  # full at the start


def test_a_refused_take_spends_nothing_and_a_take_may_cost_more_than_one():
    b = TokenBucket(rate=1.0, burst=10, now=0.0)
    assert b.take(0.0, cost=8)
    assert not b.take(0.0, cost=3)  # 2 left: refused, nothing spent
    assert b.take(0.0, cost=2) and not b.take(0.0)
    assert not b.take(5.0, cost=11)  # more than the burst: never
    assert b.take(5.0, cost=5)


def test_a_clock_reading_earlier_than_the_latest_adds_nothing_and_moves_nothing():
    fresh = TokenBucket(rate=1.0, burst=2, now=10.0)
    assert fresh.take(5.0) and fresh.take(5.0)  # what is there can be spent at any reading
    assert not fresh.take(5.0)
    b = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert b.take(10.0) and b.take(10.0) and not b.take(10.0)
    assert not b.take(9.0)  # earlier: nothing added ...
    assert not b.take(10.5)  # ... and the stamp stayed at 10: half a token by 10.5, not one and a half
    assert b.take(11.0)


@given(steps=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 4)), max_size=200),
       rate=st.integers(1, 50), burst=st.integers(1, 20))
def test_never_more_than_the_burst_and_the_rate_and_a_refused_take_waits_at_most_cost_over_rate(
        steps, rate, burst):
    """Times in ms, so the arithmetic is exact enough to compare with the bound itself."""
    b = TokenBucket(rate=float(rate), burst=burst, now=0.0)
    now = spent = 0.0
    for dt_ms, cost in steps:
        now += dt_ms / 1000
        if b.take(now, cost):
            spent += cost
        elif cost <= burst:
            retry = TokenBucket(b.rate, b.burst, b.stamp)  # the same state, tried later
            retry.tokens = b.tokens
            assert retry.take(now + cost / rate + 1e-9, cost)
        assert spent <= burst + rate * now + 1e-6


# ----------------------------------------------------------------------------- Buckets


def test_buckets_are_per_key_and_forget_the_least_recently_used_first():
    bs = Buckets(rate=1.0, burst=1, max_keys=3)
    assert bs.take("a", 0.0) and not bs.take("a", 0.0)
    assert bs.take("b", 0.0) and bs.take("c", 0.0)  # other keys, their own buckets
    assert not bs.take("a", 0.0)  # used last now: "b" is the least recently used
    assert bs.take("d", 0.0) and len(bs) == 3  # "b" forgotten ...
    assert not bs.take("a", 0.0) and not bs.take("c", 0.0)  # ... not "a" nor "c"
    assert bs.take("b", 0.0)  # a fresh burst: all forgetting gives a source
    bs.forget("b")
    bs.forget("nobody")
    assert len(bs) == 2


def test_a_new_key_never_pushes_itself_out():
    bs = Buckets(rate=1.0, burst=2, max_keys=1)
    assert bs.take("a", 0.0) and bs.take("b", 0.0)
    assert bs.take("b", 0.0) and not bs.take("b", 0.0)
    assert len(bs) == 1


def test_buckets_refill_from_their_first_take_at_their_rate_and_charge_the_cost():
    bs = Buckets(rate=2.0, burst=4)
    assert bs.take("a", 10.0, cost=4) and not bs.take("a", 10.0)
    assert not bs.take("a", 10.4)
    assert bs.take("a", 10.5) and not bs.take("a", 10.5)
    assert bs.take("a", 11.5, cost=2) and not bs.take("a", 11.5)


# ----------------------------------------------------------------------------- source_key

KEYS = [
    # an IPv4 address is itself
    ("198.18.0.7", "198.18.0.7"),
    ("0.0.0.0", "0.0.0.0"),
    ("127.0.0.1", "127.0.0.1"),
    ("255.255.255.255", "255.255.255.255"),
    # an IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) is its IPv4 address, however spelt
    ("::ffff:198.18.0.7", "198.18.0.7"),
    ("::FFFF:198.18.0.7", "198.18.0.7"),
    ("::ffff:c612:7", "198.18.0.7"),
    ("0:0:0:0:0:ffff:c612:0007", "198.18.0.7"),
    ("::ffff:0.0.0.0", "0.0.0.0"),
    ("::ffff:198.18.0.7%eth0", "198.18.0.7"),
    # any other IPv6 address is its /64, as canonical text
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2:AAAA::1", "2001:db8:1:2::/64"),
    ("2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("2001:db8:0:0:1::1", "2001:db8::/64"),
    ("2001:db8::198.18.0.7", "2001:db8::/64"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64"),
    ("ff02::1", "ff02::/64"),
    # a zone is dropped: the link-local /64 is one source whatever the link
    ("fe80::1%eth0", "fe80::/64"),
    ("fe80::2%eth1", "fe80::/64"),
    ("fe80::1%5", "fe80::/64"),
    ("2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"),
    ("fe80::%eth0", "fe80::/64"),  # the /64's first address: ipaddress's network of it keeps the zone
    # IPv4 carried in IPv6 any other way is not how a socket reports an IPv4 peer: the /64 it is in
    ("::1", "::/64"),
    ("::", "::/64"),
    ("::198.18.0.7", "::/64"),  # IPv4-compatible (deprecated)
    ("::ffff:0:198.18.0.7", "::/64"),  # IPv4-translated (SIIT)
    ("64:ff9b::198.18.0.7", "64:ff9b::/64"),  # NAT64's well-known prefix
    ("2002:c612:7::1", "2002:c612:7::/64"),  # 6to4
    ("2001:0:c612:7:0:ffff:ffff:fffe", "2001:0:c612:7::/64"),  # Teredo: its server's /64
]


@pytest.mark.parametrize(("ip", "key"), KEYS)
def test_the_key_of_an_address(ip, key):
    assert source_key(ip) == key


NOT_ADDRESSES = [
    "", " ", "?", "a", "localhost", "peer.example",
    " 198.18.0.7", "198.18.0.7 ", "198.18.0.7\n",  # surrounding spaces
    "198.018.0.7", "0198.18.0.7",  # leading zeros: octal to some parsers
    "198.18.0", "198.18.0.7.1", "256.0.0.1", "198.18.0.-1", "3325256705",
    "198.18.0.7%eth0",  # a zone on an IPv4 address
    "fe80::1%", "fe80::1%eth0%1",  # an empty zone, two of them
    "198.18.0.7/32", "198.18.0.0/24", "2001:db8:1:2::/64", "2001:db8::1/128",  # networks, keys
    "[::1]", "[2001:db8::1]:8443", "198.18.0.7:8443",  # brackets, ports
    "2001:db8:::1", "2001:db8::1::2", "1:2:3:4:5:6:7:8:9", "12345::1", "::ffff:198.18.0.256",
    "g::1", ":", ":::",
]


@pytest.mark.parametrize("text", NOT_ADDRESSES)
def test_text_that_is_not_an_address_is_refused(text):
    with pytest.raises(ValueError):
        source_key(text)


NOT_TEXT = [3325256705, b"\xc6\x12\x00\x07", b"198.18.0.7", None, ("198.18.0.7", 8443),
            ipaddress.ip_address("198.18.0.7")]


@pytest.mark.parametrize("value", NOT_TEXT, ids=lambda v: type(v).__name__)
def test_only_text_is_read(value):
    with pytest.raises(TypeError):  # ipaddress itself would take the int and the packed bytes
        source_key(value)


IPV6 = st.integers(0, 2**128 - 1).filter(lambda n: n >> 32 != 0xFFFF)  # not IPv4-mapped
IPV4 = st.integers(0, 2**32 - 1)


@given(a=IPV6, b=IPV6)
def test_two_ipv6_addresses_are_one_source_exactly_when_their_64_bit_prefixes_agree(a, b):
    same = source_key(str(ipaddress.IPv6Address(a))) == source_key(str(ipaddress.IPv6Address(b)))
    assert same == (a >> 64 == b >> 64)


@given(a=IPV6, low=st.integers(0, 2**64 - 1))
def test_every_address_of_a_64_is_one_source(a, low):
    other = (a >> 64 << 64) | low
    if other >> 32 != 0xFFFF:
        assert source_key(str(ipaddress.IPv6Address(a))) == source_key(str(ipaddress.IPv6Address(other)))


@given(v4=IPV4, zone=st.text(st.characters(blacklist_characters="%/", min_codepoint=33, max_codepoint=126),
                             min_size=1, max_size=8))
def test_an_ipv4_address_is_one_source_however_a_socket_reports_it(v4, zone):
    plain = str(ipaddress.IPv4Address(v4))
    mapped = ipaddress.IPv6Address(0xFFFF << 32 | v4)
    assert source_key(plain) == source_key(str(mapped)) == source_key(mapped.exploded) == plain
    assert source_key(f"{mapped}%{zone}") == plain
    assert ":" not in plain  # so it never equals an IPv6 key


@given(a=IPV6, zone=st.text(st.characters(blacklist_characters="%/", min_codepoint=33, max_codepoint=126),
                            min_size=1, max_size=8))
def test_a_zone_never_changes_the_source(a, zone):
    text = str(ipaddress.IPv6Address(a))
    assert source_key(f"{text}%{zone}") == source_key(text) == source_key(text.upper())
    assert source_key(text).endswith("/64")


def test_there_is_one_definition():
    assert admission.source_key is budget.source_key is ratelimit.source_key


def test_the_dhts_budgets_key_by_source_and_take_a_non_address_as_its_own_source():
    b = SourceBudgets(rate=1, burst=1)
    assert b.take("198.18.0.7", 0)
    assert not b.take("::ffff:198.18.0.7", 0)  # the same IPv4 source
    assert b.take("?", 0) and not b.take("?", 0)  # the server's name for a socket without a peer name
    assert b.take("198.18.0.7%eth0", 0)  # not an address: not 198.18.0.7 either
    assert len(b) == 3
