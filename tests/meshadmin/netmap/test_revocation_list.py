"""The CA's revocation list the server carries in every netmap for the DHT (meshadmin/netmap/
revocations.py): what it names, who signed it, and when it is signed again or kept byte for byte."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.netmap import revocations
from meshadmin.netmap.compute import changes, delta_for, view
from meshadmin.netmap.snapshot import NodeRow, Snapshot
from nodeagent.discovery.records import MAX_REVOKED, BadRecordSignature, WrongCA, verify_revocation_list

NOW = 1_800_000_000.0
A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.fixture(scope="module")
def ca():
    return mldsa.MLDSA87PrivateKey.generate()


def _list(ca, revoked, held=None, now=NOW):
    return revocations.revocation_list(revoked, sign=ca.sign, held=held, now=now,
                                       ca_public_key=ca.public_key().public_bytes_raw())


def test_no_revoked_node_no_list(ca):
    assert _list(ca, []) is None


def test_the_list_names_the_revoked_and_verifies_with_the_ca_key_only(ca):
    raw = _list(ca, [A, B])
    rec = verify_revocation_list(raw, ca.public_key().public_bytes_raw(), NOW + 3600)
    assert rec.revoked == {A, B} and rec.issued == NOW and rec.expires == NOW + revocations.LIFETIME_S
    assert rec.sequence == int(NOW * 1000)
    other = mldsa.MLDSA87PrivateKey.generate()
    with pytest.raises(WrongCA):  # another network's CA: not its list
        verify_revocation_list(raw, other.public_key().public_bytes_raw(), NOW)


def test_an_unchanged_list_keeps_its_bytes(ca):
    raw = _list(ca, [A, B])
    assert _list(ca, [B, A], held=raw, now=NOW + revocations.REISSUE_S - 1) is raw


def test_a_new_revocation_signs_a_newer_list(ca):
    raw = _list(ca, [A])
    newer = _list(ca, [A, B], held=raw, now=NOW + 1)
    key = ca.public_key().public_bytes_raw()
    old_rec, new_rec = verify_revocation_list(raw, key, NOW + 2), verify_revocation_list(newer, key, NOW + 2)
    assert new_rec.revoked == {A, B} and new_rec.sequence > old_rec.sequence


def test_an_aged_list_is_signed_again_so_it_outlives_an_outage(ca):
    raw = _list(ca, [A])
    later = NOW + revocations.REISSUE_S
    again = _list(ca, [A], held=raw, now=later)
    rec = verify_revocation_list(again, ca.public_key().public_bytes_raw(), later)
    assert again != raw and rec.expires == later + revocations.LIFETIME_S


def test_a_clock_that_went_back_still_gives_a_newer_sequence(ca):
    raw = _list(ca, [A])
    back = _list(ca, [A, C], held=raw, now=NOW - 60)
    key = ca.public_key().public_bytes_raw()
    assert verify_revocation_list(back, key, NOW).sequence == int(NOW * 1000) + 1


def test_a_held_list_of_another_ca_or_garbage_is_not_reused(ca):
    other = mldsa.MLDSA87PrivateKey.generate()
    foreign = _list(other, [A])
    for held in (foreign, b"garbage"):
        raw = _list(ca, [A], held=held)
        assert raw != held
        assert verify_revocation_list(raw, ca.public_key().public_bytes_raw(), NOW).revoked == {A}


def test_more_revoked_nodes_than_a_list_holds_is_refused(ca):
    with pytest.raises(revocations.TooManyRevoked):
        _list(ca, [f"{i:040x}" for i in range(MAX_REVOKED + 1)])


def test_every_map_of_a_view_carries_the_list_and_a_delta_only_a_changed_one(ca):
    def row(i, active=True):
        return NodeRow(pk=i, peer_id=f"{i:040x}", name=f"n{i}", overlay_ip=f"10.0.0.{i}" if active else None,
                       is_public=False, is_relay=False, active=active, fingerprint="ab" * 32)

    snap = Snapshot(1, "net", 5, 24, (row(1), row(2), row(3, active=False)), ())
    raw = _list(ca, [f"{3:040x}"])
    v5 = view(snap).with_revocation_list(raw)
    assert all(v5.netmap_for(n.peer_id).revocation_list == raw for n in v5.members)
    v6 = view(Snapshot(1, "net", 6, 24, (*snap.nodes, row(4)), ())).with_revocation_list(raw)
    same = delta_for(v5, v6, changes(v5, v6), f"{1:040x}")
    assert same is not None and same.revocation_list is None  # unchanged: not carried again
    newer = _list(ca, [f"{3:040x}", f"{2:040x}"], held=raw, now=NOW + 1)
    v7 = view(Snapshot(1, "net", 7, 24, snap.nodes, ())).with_revocation_list(newer)
    assert delta_for(v6, v7, changes(v6, v7), f"{1:040x}").revocation_list == newer


def test_a_bad_signature_is_refused_by_the_agent_side_check(ca):
    raw = bytearray(_list(ca, [A]))
    raw[-10] ^= 1
    with pytest.raises(BadRecordSignature):
        verify_revocation_list(bytes(raw), ca.public_key().public_bytes_raw(), NOW)
