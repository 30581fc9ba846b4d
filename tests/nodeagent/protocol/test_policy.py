"""protocol/policy.py: the policy's canonical form, its strict plain-data codec, and the port text
people type ("22, 8000-8080"); and the netmap's policy section (full maps and deltas)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol import netmap as nm
from nodeagent.protocol.policy import (
    ALLOW_ALL,
    Policy,
    Rule,
    check_policy,
    check_rule,
    format_ports,
    parse_ports,
    policy_from_dict,
    policy_to_dict,
)
from nodeagent.protocol.strict import Malformed

A = "a" * 40
SSH = check_rule(["10.10.10.1/32"], ["10.10.10.2/32"], "tcp", [(22, 22)])
DENY = check_policy("deny", [SSH, check_rule(["10.10.10.0/24", "fd00::/64"], ["10.10.10.2"], "icmp", [])])


def test_a_policy_round_trips_through_plain_data():
    assert policy_from_dict(policy_to_dict(DENY)) == DENY
    assert policy_from_dict(policy_to_dict(ALLOW_ALL)) == ALLOW_ALL
    assert policy_to_dict(ALLOW_ALL) == {"default": "allow", "rules": []}
    assert DENY.filters and not ALLOW_ALL.filters


def test_the_canonical_form_sorts_merges_and_dedupes():
    r = check_rule(["fd00::1", "10.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16"], ["10.10.10.2"], "udp",
                   [(80, 80), (53, 53), (54, 60), (1000, 2000), (1500, 3000)])
    assert r.src == ("10.0.0.0/8", "10.1.0.0/16", "fd00::1/128")
    assert r.dst == ("10.10.10.2/32",)
    assert r.ports == ((53, 60), (80, 80), (1000, 3000))
    assert check_policy("deny", [SSH, SSH]).rules == (SSH,)


# numbered: (case, change to a valid rule's plain form, what the error names)
BAD_RULES = [
    (1, {"src": []}, "src"),
    (2, {"src": ["10.10.10.1/24"]}, "host bits"),
    (3, {"dst": ["not an address"]}, "dst"),
    (4, {"proto": "gre"}, "proto"),
    (5, {"ports": [[0, 22]]}, "ports"),
    (6, {"ports": [[23, 22]]}, "ports"),
    (7, {"ports": [[22, 65536]]}, "ports"),
    (8, {"ports": [[22]]}, "ports"),
    (9, {"ports": [[True, 22]]}, "ports"),
    (10, {"proto": "icmp"}, "only tcp and udp"),  # icmp with ports
    (11, {"extra": 1}, "unknown"),
    (12, {"src": "10.10.10.1/32"}, "src"),
    (13, {"src": ["x" * 60]}, "src"),
]


@pytest.mark.parametrize(("case", "change", "match"), BAD_RULES, ids=[f"case{c[0]}" for c in BAD_RULES])
def test_a_bad_rule_is_malformed_and_named(case, change, match):
    d = policy_to_dict(check_policy("deny", [SSH]))
    d["rules"][0].update(change)
    with pytest.raises(Malformed, match=match):
        policy_from_dict(d)


def test_rules_need_the_default_deny_and_the_default_is_allow_or_deny():
    d = policy_to_dict(DENY)
    d["default"] = "allow"
    with pytest.raises(Malformed, match="empty"):
        policy_from_dict(d)
    d["default"] = "drop"
    with pytest.raises(Malformed, match="default"):
        policy_from_dict(d)
    with pytest.raises(Malformed, match="missing"):
        policy_from_dict({"default": "deny"})


# numbered: (case, text, ports or the error's words)
PORT_TEXTS = [
    (1, "", ()),
    (2, "*", ()),
    (3, "22", ((22, 22),)),
    (4, " 22, 80 ,8000-8080 ", ((22, 22), (80, 80), (8000, 8080))),
    (5, "80,22,81", ((22, 22), (80, 81))),
    (6, "0", "1..65535"),
    (7, "70000", "1..65535"),
    (8, "90-80", "lower"),
    (9, "ssh", "not a port"),
    (10, "22,", "not a port"),
    (11, "1-2-3", "not a port"),
    (12, "٣", "not a port"),  # a digit, but not an ASCII one
]


@pytest.mark.parametrize(("case", "text", "expected"), PORT_TEXTS, ids=[f"case{c[0]}" for c in PORT_TEXTS])
def test_port_text(case, text, expected):
    if isinstance(expected, tuple):
        assert parse_ports(text) == expected
        assert parse_ports(format_ports(expected)) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            parse_ports(text)


def _map(policy: Policy, serial: int = 3) -> nm.NetMap:
    return nm.NetMap(network="default", serial=serial,
                     node=nm.SelfInfo(peer_id=A, name="uk", overlay_ip="10.10.10.2", prefix_len=24),
                     policy=policy)


def test_the_netmap_carries_the_policy_and_a_delta_carries_it_when_it_changed():
    m = _map(DENY)
    assert nm.netmap_from_dict(nm.netmap_to_dict(m)) == m
    same = nm.diff(m, _map(DENY, 4))
    assert same.policy is None and same.is_empty
    changed = nm.diff(m, _map(ALLOW_ALL, 5))
    assert changed.policy == ALLOW_ALL and not changed.is_empty
    assert nm.delta_from_dict(nm.delta_to_dict(changed)) == changed
    assert nm.apply_delta(m, changed) == _map(ALLOW_ALL, 5)
    d = nm.netmap_to_dict(m)
    del d["policy"]
    with pytest.raises(Malformed, match="policy"):
        nm.netmap_from_dict(d)


_prefix = st.sampled_from(["10.0.0.0/8", "10.10.10.1/32", "10.10.10.2", "0.0.0.0/0", "fd00::/64", "fd00::1"])
_rule = st.builds(
    lambda src, dst, proto, ports: check_rule(src, dst, proto, ports if proto in ("tcp", "udp") else []),
    st.lists(_prefix, min_size=1, max_size=4), st.lists(_prefix, min_size=1, max_size=4),
    st.sampled_from(["any", "tcp", "udp", "icmp"]),
    st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 500))
             .map(lambda t: (t[0], min(65535, t[0] + t[1]))), max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(_rule, max_size=6))
def test_every_canonical_policy_round_trips(rules):
    p = check_policy("deny", rules)
    assert policy_from_dict(policy_to_dict(p)) == p
    assert all(isinstance(r, Rule) for r in p.rules) and list(p.rules) == sorted(set(p.rules))
