"""The netmap model: deltas (diff, apply, serial gaps), staleness, and its strict plain-data form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol import netmap as nm
from nodeagent.protocol.strict import Malformed, MessageError

A, B, C, R = ("a" * 40), ("b" * 40), ("c" * 40), ("d" * 40)
FP = "f" * 64


def _peer(pid: str, ip: str, **kw) -> nm.Peer:
    return nm.Peer(peer_id=pid, name=f"n{pid[0]}", overlay_ip=ip, fingerprint=FP, **kw)


def _map(serial: int = 3, **kw) -> nm.NetMap:
    base = dict(
        network="default", serial=serial,
        node=nm.SelfInfo(peer_id=A, name="uk", overlay_ip="10.10.10.1", prefix_len=24, is_public=True),
        peers=(_peer(B, "10.10.10.2", endpoints=(nm.Endpoint("198.18.0.2", 8443, 9443),), online=True),
               _peer(C, "10.10.10.3", relay=R)),
        routes=(nm.Route("192.168.7.0/24", B),),
        relays=(R,),
        revoked=(nm.Revocation(R, FP),),
    )
    base.update(kw)
    return nm.NetMap(**base)


def test_a_netmap_and_a_delta_round_trip_through_plain_data():
    m = _map()
    assert nm.netmap_from_dict(nm.netmap_to_dict(m)) == m
    d = nm.diff(m, _map(serial=4, routes=(), peers=(_peer(B, "10.10.10.2"),)))
    assert nm.delta_from_dict(nm.delta_to_dict(d)) == d
    e = nm.Endpoint("2001:db8::1", 8443, 9443, "observed")
    assert nm.endpoint_from_dict(nm.endpoint_to_dict(e)) == e


def test_a_netmap_with_a_bad_address_duplicate_peer_or_host_bits_is_malformed():
    d = nm.netmap_to_dict(_map())
    d["peers"][0]["overlay_ip"] = "10.10.10.300"
    with pytest.raises(Malformed, match="overlay_ip"):
        nm.netmap_from_dict(d)
    d = nm.netmap_to_dict(_map())
    d["peers"].append(d["peers"][0])
    with pytest.raises(Malformed, match="duplicate"):
        nm.netmap_from_dict(d)
    d = nm.netmap_to_dict(_map())
    d["routes"][0]["prefix"] = "192.168.7.1/24"  # host bits set
    with pytest.raises(Malformed, match="prefix"):
        nm.netmap_from_dict(d)


def test_a_delta_older_than_its_base_or_an_unknown_endpoint_source_is_malformed():
    d = nm.delta_to_dict(nm.diff(_map(serial=3), _map(serial=5, routes=())))
    d["serial"] = 2
    with pytest.raises(Malformed, match="base_serial"):
        nm.delta_from_dict(d)
    with pytest.raises(Malformed, match="source"):
        nm.endpoint_from_dict({"ip": "198.18.0.1", "control_port": 1, "udp_port": 2, "source": "guessed"})


def test_diff_then_apply_gives_the_new_map():
    old = _map(serial=3)
    new = _map(serial=5, peers=(_peer(B, "10.10.10.2", online=False), _peer(R, "10.10.10.9")),
               routes=(), revoked=())
    delta = nm.diff(old, new)
    assert delta.remove == (C,)
    assert {p.peer_id for p in delta.upsert} == {B, R}
    assert delta.relays is None  # unchanged section travels as None
    assert nm.apply_delta(old, delta) == new


def test_the_cas_revocation_list_travels_base64_and_only_when_there_is_one():
    raw = b"SMD1\x02" + bytes(range(256)) * 20
    with_list = _map(revocation_list=raw)
    d = nm.netmap_to_dict(with_list)
    assert isinstance(d["revocation_list"], str) and nm.netmap_from_dict(d) == with_list
    assert "revocation_list" not in nm.netmap_to_dict(_map())  # maps without one are as before
    assert nm.netmap_from_dict(nm.netmap_to_dict(_map())).revocation_list is None
    # a delta carries it only when it changed
    newer = _map(serial=4, revocation_list=raw + b"\x01")
    delta = nm.diff(with_list, newer)
    assert delta.revocation_list == raw + b"\x01" and not delta.is_empty
    assert nm.delta_from_dict(nm.delta_to_dict(delta)) == delta
    assert nm.apply_delta(with_list, delta) == newer
    same = nm.diff(with_list, _map(serial=4, revocation_list=raw))
    assert same.revocation_list is None and "revocation_list" not in nm.delta_to_dict(same)
    assert nm.apply_delta(with_list, same).revocation_list == raw


@pytest.mark.parametrize("value, error", [
    ("not base64!", "not base64"),
    ("", "1.."),
    ("A" * (4 * ((nm.MAX_REVOCATION_LIST + 2) // 3) + 4), "1.."),
    (b"bytes", "string"),
])
def test_a_bad_revocation_list_is_malformed(value, error):
    d = nm.netmap_to_dict(_map())
    d["revocation_list"] = value
    with pytest.raises(Malformed, match=error):
        nm.netmap_from_dict(d)


def test_the_netmaps_cap_is_the_dhts():
    from nodeagent.discovery.records import MAX_RECORD

    assert nm.MAX_REVOCATION_LIST == MAX_RECORD


def test_a_delta_from_another_base_serial_is_a_gap():
    old, new = _map(serial=3), _map(serial=5, routes=())
    delta = nm.diff(old, new)
    with pytest.raises(nm.SerialGap):
        nm.apply_delta(_map(serial=4), delta)


def test_only_an_older_serial_is_stale():
    assert nm.is_stale(5, 4)
    assert not nm.is_stale(5, 5)
    assert not nm.is_stale(5, 6)
    assert not nm.is_stale(None, 0)


_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
            | st.text(max_size=8) | st.binary(max_size=8))


@settings(max_examples=100, deadline=None)
@given(st.recursive(_SCALARS,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20))
def test_random_structures_never_escape_as_anything_but_a_message_error(value):
    for parse in (nm.netmap_from_dict, nm.delta_from_dict, nm.endpoint_from_dict):
        try:
            parse(value)
        except MessageError:
            pass


@pytest.mark.parametrize("source", ["reported", "observed", "local", "reflexive"])
def test_an_endpoint_may_be_reported_observed_or_a_udp_candidate(source):
    d = {"ip": "198.18.0.1", "control_port": 8443, "udp_port": 9443, "source": source}
    assert nm.endpoint_from_dict(d) == nm.Endpoint("198.18.0.1", 8443, 9443, source)


def test_the_dns_suffix_and_exit_node_fields_round_trip_and_may_be_absent():
    me = nm.SelfInfo(peer_id=A, name="uk", overlay_ip="10.10.10.1", prefix_len=24, dns_suffix="corp.example",
                     is_exit=True, use_exit=B)
    m = _map(node=me, routes=(nm.Route("0.0.0.0/0", B), nm.Route("::/0", B)))
    assert nm.netmap_from_dict(nm.netmap_to_dict(m)) == m
    assert all(nm.is_exit_route(r) for r in m.routes)
    assert not nm.is_exit_route(nm.Route("192.168.7.0/24", B))
    d = nm.netmap_to_dict(_map())
    for key in ("dns_suffix", "is_exit", "use_exit"):  # a map persisted before these keys existed
        del d["node"][key]
    parsed = nm.netmap_from_dict(d)
    assert (parsed.node.dns_suffix, parsed.node.is_exit, parsed.node.use_exit) == (None, False, None)


@pytest.mark.parametrize("field, value", [
    ("dns_suffix", "bad suffix"), ("dns_suffix", "-x.mesh"), ("dns_suffix", "mesh.123"), ("dns_suffix", ""),
    ("dns_suffix", "a" * 64 + ".mesh"), ("is_exit", 1), ("use_exit", "B" * 40), ("use_exit", A),
])
def test_a_bad_dns_suffix_or_exit_field_is_malformed(field, value):
    d = nm.netmap_to_dict(_map())
    d["node"][field] = value
    with pytest.raises(Malformed):
        nm.netmap_from_dict(d)
