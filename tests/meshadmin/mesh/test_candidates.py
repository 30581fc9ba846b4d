"""UDP candidates an agent reports (meshadmin/mesh/services/peers.py `clean_candidates`, `register_peer`)
and how netmaps list them (meshadmin/netmap/compute.py `_endpoints`)."""

from __future__ import annotations

import pytest

from meshadmin.mesh.services.errors import InvalidInput
from meshadmin.mesh.services.peers import MAX_CANDIDATES, clean_candidates
from meshadmin.netmap.compute import MAX_ENDPOINTS, _endpoints
from meshadmin.netmap.snapshot import NodeRow


def test_candidates_are_normalised_and_deduplicated():
    got = clean_candidates(
        [
            ("local", "198.18.7.2", 9443),
            ("reflexive", "2001:DB8::1", 40000),
            ("reflexive", "198.18.7.2", 9443),
        ]
    )
    assert got == [["local", "198.18.7.2", 9443], ["reflexive", "2001:db8::1", 40000]]


@pytest.mark.parametrize(
    ("cand", "field"),
    [
        (("observed", "198.18.7.2", 9443), "candidates[0].source"),
        (("local", "127.0.0.1", 9443), "candidates[0]"),
        (("local", "169.254.0.1", 9443), "candidates[0]"),
        (("local", "ff02::1", 9443), "candidates[0]"),
        (("local", "255.255.255.255", 9443), "candidates[0]"),
        (("local", "0.0.0.0", 9443), "candidates[0]"),
        (("local", "198.18.7.2", 0), "candidates[0]"),
        (("local", "198.18.7.2", 70000), "candidates[0]"),
        (("local", "not-an-ip", 9443), "candidates[0]"),
    ],
)
def test_an_unusable_candidate_is_refused_naming_it(cand, field):
    with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
        clean_candidates([cand])


def test_at_most_15_candidates():
    many = [("local", f"198.18.{i}.2", 9443) for i in range(MAX_CANDIDATES + 1)]
    with pytest.raises(InvalidInput, match="at most"):
        clean_candidates(many)
    assert len(clean_candidates(many[:MAX_CANDIDATES])) == MAX_CANDIDATES


def row(**kw) -> NodeRow:
    base = {
        "pk": 1,
        "peer_id": "aa" * 20,
        "name": "a",
        "overlay_ip": "10.10.10.1",
        "is_public": False,
        "is_relay": False,
        "active": True,
        "fingerprint": "0" * 64,
        "endpoint_ip": "198.18.7.2",
        "control_port": 8443,
        "udp_port": 9443,
    }
    return NodeRow(**{**base, **kw})


def test_a_netmap_lists_the_endpoint_the_observed_address_then_the_candidates_once_each():
    n = row(
        observed_ip="198.19.0.10",
        candidates=(
            ("local", "198.18.7.2", 9443),
            ("reflexive", "198.19.0.10", 9443),
            ("reflexive", "198.19.0.10", 40001),
        ),
    )
    assert [(e.source, e.ip, e.udp_port) for e in _endpoints(n)] == [
        ("reported", "198.18.7.2", 9443),
        ("observed", "198.19.0.10", 9443),
        ("reflexive", "198.19.0.10", 40001),
    ]


def test_a_netmap_lists_at_most_16_endpoints_per_peer_and_none_without_a_live_record():
    n = row(observed_ip="198.19.0.10", candidates=tuple(("local", f"198.18.{i}.9", 9443) for i in range(20)))
    assert len(_endpoints(n)) == MAX_ENDPOINTS
    assert _endpoints(row(endpoint_ip=None, candidates=(("local", "198.18.1.1", 9443),))) == ()
