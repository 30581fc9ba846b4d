"""dns/names.py: the name table from a netmap and what each question gets (pure)."""

from __future__ import annotations

import pytest

from nodeagent.dns.names import (
    CLASS_IN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    Answer,
    Forward,
    MeshNames,
    NameError_,
    NoData,
    Refused,
    decide,
)
from nodeagent.protocol import netmap as nm

ME, UK, MAC, OLD, TWIN = "1" * 40, "2" * 40, "3" * 40, "4" * 40, "5" * 40
TXT = 16


def peer(pid: str, name: str, ip: str) -> nm.Peer:
    return nm.Peer(pid, name, ip, "0" * 64)


def netmap(suffix: str | None = "default.mesh", peers=(), revoked=()) -> nm.NetMap:
    me = nm.SelfInfo(ME, "belgium", "10.10.10.2", 24, dns_suffix=suffix)
    return nm.NetMap("default", 1, me, tuple(peers),
                     revoked=tuple(nm.Revocation(r, "0" * 64) for r in revoked))


SEED = netmap(peers=[peer(UK, "uk", "10.10.10.1"), peer(MAC, "Mac", "10.10.10.8"),
                     peer(OLD, "gone", "10.10.10.9"), peer(TWIN, "my laptop", "10.10.10.7")], revoked=[OLD])


def ask(names, qname, qtype=TYPE_A, qclass=CLASS_IN, from_self=True, can_forward=True):
    return decide(names, qname, qtype, qclass, from_self=from_self, can_forward=can_forward)


def test_every_node_with_a_label_name_answers_under_the_suffix_ourselves_included():
    names = MeshNames.from_netmap(SEED)
    assert names.table == {"belgium": "10.10.10.2", "uk": "10.10.10.1", "mac": "10.10.10.8"}
    assert names.skipped == ("my laptop",)  # not a DNS label: no name
    assert ask(names, "uk.default.mesh") == Answer(("10.10.10.1",))
    assert ask(names, "MAC.Default.Mesh.") == Answer(("10.10.10.8",))  # case and the final dot do not matter
    assert ask(names, "belgium.default.mesh", TYPE_ANY) == Answer(("10.10.10.2",))


def test_names_under_the_suffix_are_authoritative():
    names = MeshNames.from_netmap(SEED)
    assert ask(names, "gone.default.mesh") == NameError_()  # revoked: no name
    assert ask(names, "nobody.default.mesh") == NameError_()
    assert ask(names, "a.uk.default.mesh") == NameError_()
    assert ask(names, "uk.default.mesh", TYPE_AAAA) == NoData()
    assert ask(names, "uk.default.mesh", TXT) == NoData()
    assert ask(names, "default.mesh") == NoData()
    assert isinstance(ask(names, "uk.default.mesh", qclass=3), Refused)  # CHAOS
    assert ask(names, "uk.default.mesh", from_self=False, can_forward=False) == Answer(("10.10.10.1",))


def test_other_names_are_forwarded_for_the_node_itself_and_refused_otherwise():
    names = MeshNames.from_netmap(SEED)
    assert ask(names, "example.com") == Forward()
    assert isinstance(ask(names, "example.com", from_self=False), Refused)  # no open resolver for peers
    assert isinstance(ask(names, "example.com", can_forward=False), Refused)  # nothing to forward to
    assert ask(names, "xdefault.mesh") == Forward()  # not under the suffix


def test_a_name_two_nodes_share_answers_for_neither():
    twins = [peer(UK, "twin", "10.10.10.1"), peer(MAC, "TWIN", "10.10.10.8")]
    names = MeshNames.from_netmap(netmap(peers=twins))
    assert names.ambiguous == {"twin"}
    assert isinstance(ask(names, "twin.default.mesh"), Refused)


def test_a_rename_in_the_next_map_moves_the_name():
    before = MeshNames.from_netmap(SEED)
    after = MeshNames.from_netmap(netmap(peers=[peer(UK, "london", "10.10.10.1")]))
    assert ask(before, "uk.default.mesh") == Answer(("10.10.10.1",))
    assert ask(after, "uk.default.mesh") == NameError_()
    assert ask(after, "london.default.mesh") == Answer(("10.10.10.1",))


def test_without_a_suffix_there_are_no_names_and_everything_is_forwarded_or_refused():
    names = MeshNames.from_netmap(netmap(suffix=None, peers=[peer(UK, "uk", "10.10.10.1")]))
    assert names.table == {} and names.suffix is None
    assert ask(names, "uk.default.mesh") == Forward()


@pytest.mark.parametrize("suffix", ["corp.example", "Corp.Example"])
def test_a_configured_suffix(suffix):
    names = MeshNames.from_netmap(netmap(suffix="corp.example", peers=[peer(UK, "uk", "10.10.10.1")]))
    assert ask(names, f"uk.{suffix}") == Answer(("10.10.10.1",))
    assert ask(names, "uk.default.mesh") == Forward()


def test_an_ipv6_overlay_answers_aaaa():
    me = nm.SelfInfo(ME, "me", "fd00::2", 64, dns_suffix="v6.mesh")
    m = nm.NetMap("v6", 1, me, (peer(UK, "uk", "fd00::1"),))
    names = MeshNames.from_netmap(m)
    assert ask(names, "uk.v6.mesh", TYPE_AAAA) == Answer(("fd00::1",))
    assert ask(names, "uk.v6.mesh", TYPE_A) == NoData()
