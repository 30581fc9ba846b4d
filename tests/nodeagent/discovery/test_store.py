"""The record store: validation on put and on get, highest rank wins (stale sequences refused),
expiry, revocation, and the caps (total, bytes, per publisher) with eviction by distance."""

from __future__ import annotations

import pytest

from nodeagent.discovery.ids import addr_key, distance, revocations_key
from nodeagent.discovery.records import RecordVerifier, build_revocation_list
from nodeagent.discovery.revocations import RevokedSet
from nodeagent.discovery.store import Put, RecordStore
from nodeagent.protocol.cert import ca_id

from .conftest import NOW, make_node, make_record

OWN = bytes(20)


@pytest.fixture
def revoked():
    return RevokedSet()


@pytest.fixture
def store(ca_public, revoked):
    return RecordStore(OWN, RecordVerifier(ca_public, revoked).verify)


def test_a_record_lives_under_its_two_keys_only(store, alice, bob):
    raw = make_record(alice, seq=1)
    assert store.put(alice.node_id, raw, NOW).status is Put.STORED
    assert store.put(addr_key(alice.overlay_ip), raw, NOW).status is Put.STORED
    assert store.get(alice.node_id, NOW).raw == raw
    assert store.get(addr_key("10.10.10.5"), NOW).peer_id == alice.peer_id
    # the two keys share one copy of the bytes, even when they came in two messages
    store2 = RecordStore(OWN, store.verify)
    store2.put(alice.node_id, bytes(bytearray(raw)), NOW)
    store2.put(addr_key(alice.overlay_ip), bytes(bytearray(raw)), NOW)
    assert store2.get(alice.node_id, NOW).raw is store2.get(addr_key(alice.overlay_ip), NOW).raw
    for key in (bob.node_id, addr_key("10.10.10.6"), bytes(20)):
        assert store.put(key, raw, NOW).status is Put.WRONG_KEY
    assert len(store) == 2


def test_stale_sequence_is_refused_and_the_highest_kept(store, alice):
    r5, r3, r6 = (make_record(alice, seq=s) for s in (5, 3, 6))
    assert store.put(alice.node_id, r5, NOW).status is Put.STORED
    assert store.put(alice.node_id, r3, NOW).status is Put.STALE
    other_bytes = make_record(alice, seq=5)  # same sequence, another signature
    assert store.put(alice.node_id, other_bytes, NOW).status is Put.STALE
    assert store.put(alice.node_id, r5, NOW).status is Put.UNCHANGED  # a republish of the same record
    assert store.get(alice.node_id, NOW).sequence == 5
    assert store.put(alice.node_id, r6, NOW).status is Put.STORED
    assert store.get(alice.node_id, NOW).sequence == 6
    assert store.refused == {"stale": 2}


def test_invalid_records_are_refused_with_their_reason(store, alice, other_ca):
    outsider = make_node(other_ca, "mallory", "10.10.10.66")
    r = store.put(outsider.node_id, make_record(outsider), NOW)
    assert r.status is Put.INVALID and r.reason == "wrong_ca"
    r = store.put(alice.node_id, b"garbage", NOW)
    assert r.status is Put.INVALID and r.reason == "malformed"
    r = store.put(alice.node_id, make_record(alice, issued=NOW - 100, expires=NOW - 1), NOW)
    assert r.status is Put.INVALID and r.reason == "expired"
    r = store.put(b"short", make_record(alice), NOW)
    assert r.status is Put.INVALID
    assert len(store) == 0


def test_get_validates_again_expiry(store, alice):
    store.put(alice.node_id, make_record(alice, expires=NOW + 100), NOW)
    assert store.get(alice.node_id, NOW + 99) is not None
    assert store.get(alice.node_id, NOW + 100) is None
    assert alice.node_id not in store


def test_expire_drops_expired_records(store, alice, bob):
    store.put(alice.node_id, make_record(alice, expires=NOW + 100), NOW)
    store.put(bob.node_id, make_record(bob, expires=NOW + 1000), NOW)
    assert store.expire(NOW + 100) == 1
    assert store.keys() == [bob.node_id]


def test_get_validates_again_revocation(store, alice, revoked):
    store.put(alice.node_id, make_record(alice), NOW)
    revoked.add([alice.peer_id])
    assert store.get(alice.node_id, NOW) is None
    assert store.put(alice.node_id, make_record(alice, seq=9), NOW).reason == "revoked"


def test_purge_revoked(store, alice, bob):
    for n in (alice, bob):
        raw = make_record(n)
        store.put(n.node_id, raw, NOW)
        store.put(addr_key(n.overlay_ip), raw, NOW)
    assert store.purge_revoked({alice.peer_id}) == 2
    assert sorted(store.keys()) == sorted([bob.node_id, addr_key(bob.overlay_ip)])


def test_revocation_lists_are_stored_by_sequence(store, ca, ca_public, alice):
    key = revocations_key(ca_id(ca_public))

    def lst(seq):
        return build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=seq, issued=NOW,
                                     expires=NOW + 86400, revoked=[alice.peer_id])

    assert store.put(key, lst(2), NOW).status is Put.STORED
    assert store.put(key, lst(1), NOW).status is Put.STALE
    assert store.put(key, lst(3), NOW).status is Put.STORED
    assert store.get(key, NOW).sequence == 3
    assert store.put(alice.node_id, lst(4), NOW).status is Put.WRONG_KEY


def test_total_cap_evicts_the_key_farthest_from_us(ca, ca_public):
    nodes = [make_node(ca, f"n{i}", f"10.10.11.{i + 1}") for i in range(6)]
    store = RecordStore(OWN, RecordVerifier(ca_public).verify, max_records=4)
    by_distance = sorted(nodes, key=lambda n: distance(n.node_id, OWN))
    for n in by_distance[1:5]:
        assert store.put(n.node_id, make_record(n), NOW).status is Put.STORED
    # farther than everything held: refused
    r = store.put(by_distance[5].node_id, make_record(by_distance[5]), NOW)
    assert r.status is Put.FULL
    # nearer: the farthest held goes
    assert store.put(by_distance[0].node_id, make_record(by_distance[0]), NOW).status is Put.STORED
    assert sorted(store.keys()) == sorted(n.node_id for n in by_distance[:4])
    assert len(store) == 4


def test_byte_cap(ca, ca_public, alice, bob):
    raw = make_record(alice)
    store = RecordStore(OWN, RecordVerifier(ca_public).verify, max_bytes=int(len(raw) * 1.5))
    a_first = distance(alice.node_id, OWN) > distance(bob.node_id, OWN)
    far, near = (alice, bob) if a_first else (bob, alice)
    assert store.put(far.node_id, make_record(far), NOW).status is Put.STORED
    assert store.put(near.node_id, make_record(near), NOW).status is Put.STORED  # evicts far
    assert store.keys() == [near.node_id]
    assert store.bytes_used <= store.max_bytes


def test_per_publisher_cap(ca, ca_public, alice):
    """A node the CA moved to another overlay IP (same key, newer certificate) would hold three
    keys: its lowest-ranked one goes."""
    store = RecordStore(OWN, RecordVerifier(ca_public).verify)
    old = make_record(alice, seq=1)
    store.put(alice.node_id, old, NOW)
    store.put(addr_key(alice.overlay_ip), old, NOW)
    moved = make_node(ca, "belgium", "10.10.10.55", key=alice.key, not_before=NOW - 5)
    new = make_record(moved, seq=2)
    assert store.put(addr_key("10.10.10.55"), new, NOW).status is Put.STORED
    assert len(store) == 2
    assert alice.node_id in store and addr_key("10.10.10.55") in store  # the old pointer went first
    assert store.put(alice.node_id, new, NOW).status is Put.STORED
    assert store.get(alice.node_id, NOW).sequence == 2


def test_a_reassigned_overlay_ip_belongs_to_the_newer_certificate(ca, ca_public, alice):
    store = RecordStore(OWN, RecordVerifier(ca_public).verify)
    successor = make_node(ca, "newcomer", alice.overlay_ip, not_before=NOW - 10)  # alice's cert: NOW - 3600
    key = addr_key(alice.overlay_ip)
    assert store.put(key, make_record(successor, seq=1), NOW).status is Put.STORED
    # alice's record has a far higher sequence but an older certificate
    assert store.put(key, make_record(alice, seq=10**12), NOW).status is Put.STALE
    assert store.get(key, NOW).peer_id == successor.peer_id
