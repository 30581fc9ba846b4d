"""Signed DHT records. Each attack of issue 10 item 5 on records is a test here: forged signature,
a record for someone else's id, expired, wrong CA, revoked (also re-certified), unenrolled ids;
plus strict parsing, endpoint sanity, type confusion and the verifier's cache."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.discovery.ids import addr_key, revocations_key
from nodeagent.discovery.records import (
    KIND_OBSERVED,
    KIND_REPORTED,
    MAX_REVOKED,
    BadEndpoint,
    BadRecordCertificate,
    BadRecordSignature,
    ExpiredRecord,
    MalformedRecord,
    NodeRecord,
    NotOwner,
    RecordError,
    RecordTooLarge,
    RecordVerifier,
    RevocationList,
    RevokedNode,
    VerifiedDigests,
    WrongCA,
    build_node_record,
    build_revocation_list,
    check_endpoint,
    next_sequence,
    parse_record,
    verify_node_record,
    verify_revocation_list,
)
from nodeagent.discovery.revocations import RevokedSet
from nodeagent.protocol.cert import ca_id
from nodeagent.protocol.constants import CONTEXT_CERT, CONTEXT_DHT

from .conftest import NOW, endpoint, make_node, make_record

SIG = 2 + 4627  # the signature field at the end of every record


def resign(raw: bytes, key, context=CONTEXT_DHT) -> bytes:
    signed = raw[:-SIG]
    sig = key.sign(signed, context)
    return signed + struct.pack("!H", len(sig)) + sig


def patch(raw: bytes, offset: int, new: bytes) -> bytes:
    return raw[:offset] + new + raw[offset + len(new) :]


PEER_ID_AT = 4 + 1 + 1  # magic, type, flags
SEQ_AT = PEER_ID_AT + 20


@pytest.fixture(scope="module")
def rec(alice):
    candidates = [endpoint("198.18.0.5"), endpoint("2001:db8::5", 8443, 9443, KIND_OBSERVED)]
    return make_record(alice, seq=7, candidates=candidates)


def test_round_trip_keeps_the_signed_bytes_verbatim(rec, alice, ca_public):
    r = verify_node_record(rec, ca_public, NOW)
    assert isinstance(r, NodeRecord)
    assert r.peer_id == alice.peer_id and r.sequence == 7 and not r.public
    assert str(r.overlay_ip) == "10.10.10.5"
    assert [(e.ip, e.control_port, e.udp_port, e.source) for e in r.endpoints] == [
        ("198.18.0.5", 8443, 9443, "reported"),
        ("2001:db8::5", 8443, 9443, "observed"),
    ]
    assert [c.kind for c in r.candidates] == [KIND_REPORTED, KIND_OBSERVED] == [5, 2]
    assert r.raw == rec and r.signed == rec[:-SIG] and r.signature == rec[-4627:]
    assert r.keys == (alice.node_id, addr_key("10.10.10.5"))
    assert r.certificate.to_bytes() == alice.cert
    assert 12_000 < len(rec) < 12_600  # certificate 7.3 KB + signature 4.6 KB + fields


def test_an_unknown_candidate_kind_is_carried(alice, ca_public):
    raw = make_record(alice, candidates=[endpoint(kind=7)])
    assert verify_node_record(raw, ca_public, NOW).candidates[0].kind == 7


# ---------------------------------------------------------------- attack: forged signature


def test_forged_signature_is_refused(rec, ca_public):
    forged = patch(rec, len(rec) - 100, bytes([rec[-100] ^ 1]))
    with pytest.raises(BadRecordSignature):
        verify_node_record(forged, ca_public, NOW)


def test_a_changed_field_breaks_the_signature(rec, ca_public):
    bumped = patch(rec, SEQ_AT, struct.pack("!Q", 10**12))  # a "newer" sequence without re-signing
    with pytest.raises(BadRecordSignature):
        verify_node_record(bumped, ca_public, NOW)


def test_a_signature_made_for_another_purpose_is_refused(rec, alice, ca_public):
    with pytest.raises(BadRecordSignature):
        verify_node_record(resign(rec, alice.key, CONTEXT_CERT), ca_public, NOW)


# ---------------------------------------------------------------- attack: someone else's id


def test_a_record_naming_someone_elses_id_is_refused(rec, alice, bob, ca_public):
    # alice writes bob's id into her record and signs it with her own key
    claim = resign(patch(rec, PEER_ID_AT, bob.node_id), alice.key)
    with pytest.raises(NotOwner):
        verify_node_record(claim, ca_public, NOW)


def test_a_record_with_someone_elses_certificate_is_refused(alice, bob, ca_public):
    # bob's certificate is public; alice builds "bob's record" with it and signs with her key
    forged = build_node_record(alice.key.sign, certificate=bob.cert, sequence=99, issued=NOW - 1,
                               expires=NOW + 3600, candidates=[endpoint("198.18.6.6")])
    with pytest.raises(BadRecordSignature):
        verify_node_record(forged, ca_public, NOW)


def test_overlay_ip_must_be_the_certificates(ca, alice, ca_public):
    moved = make_node(ca, "belgium", "10.10.10.99", key=alice.key)  # same key, another IP
    raw = make_record(alice)
    ip_at = SEQ_AT + 8 + 8 + 8 + 1
    claim = resign(patch(raw, ip_at, bytes([10, 10, 10, 99])), alice.key)
    with pytest.raises(NotOwner):
        verify_node_record(claim, ca_public, NOW)
    # with the matching certificate it is fine
    assert str(verify_node_record(make_record(moved), ca_public, NOW).overlay_ip) == "10.10.10.99"


def test_public_flag_needs_a_public_certificate(alice, hub, ca_public):
    with pytest.raises(NotOwner):
        make_record(alice, public=True)
    claim = resign(patch(make_record(alice), 5, b"\x01"), alice.key)
    with pytest.raises(NotOwner):
        verify_node_record(claim, ca_public, NOW)
    assert verify_node_record(make_record(hub, public=True), ca_public, NOW).public


# ---------------------------------------------------------------- attack: expired / time


def test_expired_record_is_refused(alice, ca_public):
    raw = make_record(alice, issued=NOW - 7200, expires=NOW - 1)
    with pytest.raises(ExpiredRecord):
        verify_node_record(raw, ca_public, NOW)
    with pytest.raises(ExpiredRecord):
        verify_node_record(make_record(alice, expires=NOW + 10), ca_public, NOW + 10)


def test_lifetime_is_at_most_24_hours(alice, ca_public):
    with pytest.raises(MalformedRecord):
        make_record(alice, issued=NOW, expires=NOW + 24 * 3600 + 1)
    assert verify_node_record(make_record(alice, issued=NOW, expires=NOW + 24 * 3600), ca_public, NOW)


def test_a_record_from_the_future_is_refused(alice, ca_public):
    raw = make_record(alice, issued=NOW + 3600, expires=NOW + 7200)
    with pytest.raises(ExpiredRecord):
        verify_node_record(raw, ca_public, NOW)
    assert verify_node_record(raw, ca_public, NOW + 3600 - 300)  # within the clock-skew allowance


def test_an_expired_certificate_invalidates_the_record(ca, ca_public):
    old = make_node(ca, "old", "10.10.10.40", not_before=NOW - 86400, not_after=NOW + 100)
    raw = make_record(old, expires=NOW + 3600)
    assert verify_node_record(raw, ca_public, NOW)
    with pytest.raises(BadRecordCertificate):
        verify_node_record(raw, ca_public, NOW + 100)


# ---------------------------------------------------------------- attack: wrong CA, unenrolled ids


def test_a_certificate_from_another_ca_is_refused(other_ca, ca_public):
    outsider = make_node(other_ca, "mallory", "10.10.10.66")
    with pytest.raises(WrongCA):
        verify_node_record(make_record(outsider), ca_public, NOW)


def test_a_self_made_certificate_claiming_our_ca_id_is_refused(other_ca, ca, ca_public):
    """An unenrolled id cannot get a certificate that verifies: copying our CA's id into a
    certificate signed by another key fails the certificate signature check."""
    outsider = make_node(other_ca, "mallory", "10.10.10.66")
    cert = bytearray(outsider.cert)
    cert[22:42] = ca_id(ca_public)  # the ca_id field
    tbs_len = len(cert) - (2 + 4627)
    sig = other_ca.sign(bytes(cert[:tbs_len]), CONTEXT_CERT)
    forged_cert = bytes(cert[:tbs_len]) + struct.pack("!H", len(sig)) + sig
    raw = make_record(outsider, cert=forged_cert)
    with pytest.raises(BadRecordCertificate):
        verify_node_record(raw, ca_public, NOW)


# ---------------------------------------------------------------- attack: revoked


def test_a_revoked_node_is_refused(rec, alice, ca_public):
    with pytest.raises(RevokedNode):
        verify_node_record(rec, ca_public, NOW, revoked={alice.peer_id})


def test_revocation_is_by_identity_a_reissued_certificate_does_not_lift_it(ca, alice, ca_public):
    reissued = make_node(ca, "belgium", "10.10.10.5", key=alice.key, not_before=NOW - 10)
    assert reissued.cert != alice.cert and reissued.peer_id == alice.peer_id
    raw = make_record(reissued, seq=next_sequence(7, NOW))
    with pytest.raises(RevokedNode):
        verify_node_record(raw, ca_public, NOW, revoked={alice.peer_id})


# ---------------------------------------------------------------- endpoints


BAD_ENDPOINTS = [
    "127.0.0.1", "0.0.0.0", "169.254.169.254", "224.0.0.1", "255.255.255.255", "::1", "::",
    "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.1.1", "not-an-ip",
]


@pytest.mark.parametrize("ip", BAD_ENDPOINTS)
def test_bad_endpoint_addresses_are_refused_when_building_and_verifying(ip, alice, ca_public):
    with pytest.raises(BadEndpoint):
        check_endpoint(ip, 8443, 9443)
    if ip in ("127.0.0.1", "::1"):
        raw = make_record(alice, candidates=[endpoint(ip)], allow_loopback=True)  # a simulation's record
        with pytest.raises(BadEndpoint):
            verify_node_record(raw, ca_public, NOW)
        assert verify_node_record(raw, ca_public, NOW, allow_loopback=True)
    else:
        with pytest.raises(BadEndpoint):
            make_record(alice, candidates=[endpoint(ip)])


@pytest.mark.parametrize(("control", "udp"), [(0, 9443), (8443, 0), (65536, 1), (True, 9443)])
def test_bad_ports_are_refused(control, udp):
    with pytest.raises(BadEndpoint):
        check_endpoint("198.18.0.1", control, udp)


def test_candidate_count_is_bounded(alice):
    with pytest.raises(MalformedRecord):
        make_record(alice, candidates=[endpoint(f"198.18.0.{n}") for n in range(1, 10)])
    with pytest.raises(MalformedRecord):
        build_node_record(alice.key.sign, certificate=alice.cert, sequence=1, issued=NOW, expires=NOW + 1,
                          candidates=[])


# ---------------------------------------------------------------- strict parsing


def test_every_truncation_and_trailing_bytes_fail_with_a_declared_error(rec):
    for n in [0, 1, 4, 5, 6, 30, 60, 70, 100, 500, 7000, len(rec) - 4627, len(rec) - 1]:
        with pytest.raises(MalformedRecord):
            parse_record(rec[:n])
    with pytest.raises(MalformedRecord):
        parse_record(rec + b"\x00")
    with pytest.raises(MalformedRecord):
        parse_record(b"XXXX" + rec[4:])
    with pytest.raises(MalformedRecord):
        parse_record(rec[:4] + b"\x09" + rec[5:])
    with pytest.raises(MalformedRecord):
        parse_record("text")


def test_oversized_records_are_refused_before_parsing(rec):
    with pytest.raises(RecordTooLarge):
        parse_record(rec[:5] + bytes(16 * 1024))  # a "node record" over 16 KiB
    with pytest.raises(RecordTooLarge):
        parse_record(bytes(41 * 1024))


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=300), at=st.integers(0, 12_400), splice=st.binary(min_size=1, max_size=8))
def test_mutations_only_raise_record_errors(rec, junk, at, splice):
    for candidate in (junk, rec[:at] + splice + rec[at + len(splice) :], rec[:at] + junk):
        try:
            parse_record(candidate)
        except RecordError:
            pass


# ---------------------------------------------------------------- revocation lists


def test_revocation_list_round_trip_and_key(ca, ca_public, alice, bob):
    raw = build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=3, issued=NOW - 10,
                                expires=NOW + 86400, revoked=[bob.peer_id, alice.node_id])
    lst = verify_revocation_list(raw, ca_public, NOW)
    assert isinstance(lst, RevocationList)
    assert lst.revoked == {alice.peer_id, bob.peer_id} and lst.sequence == 3
    assert lst.keys == (revocations_key(ca_id(ca_public)),)
    assert lst.raw == raw


def test_revocation_list_checks(ca, ca_public, other_ca, alice):
    other_public = other_ca.public_key().public_bytes_raw()
    foreign = build_revocation_list(other_ca.sign, ca_public_key=other_public, sequence=1, issued=NOW,
                                    expires=NOW + 60, revoked=[])
    with pytest.raises(WrongCA):
        verify_revocation_list(foreign, ca_public, NOW)
    # a node cannot sign a list in our CA's name
    forged = build_revocation_list(alice.key.sign, ca_public_key=ca_public, sequence=1, issued=NOW,
                                   expires=NOW + 60, revoked=[alice.peer_id])
    with pytest.raises(BadRecordSignature):
        verify_revocation_list(forged, ca_public, NOW)
    expired = build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=1, issued=NOW - 100,
                                    expires=NOW - 1, revoked=[])
    with pytest.raises(ExpiredRecord):
        verify_revocation_list(expired, ca_public, NOW)
    with pytest.raises(MalformedRecord):
        build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=1, issued=NOW,
                              expires=NOW + 8 * 86400, revoked=[])
    with pytest.raises(RecordTooLarge):
        build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=1, issued=NOW, expires=NOW + 60,
                              revoked=[n.to_bytes(20, "big") for n in range(MAX_REVOKED + 1)])
    full = build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=1, issued=NOW, expires=NOW + 60,
                                 revoked=[n.to_bytes(20, "big") for n in range(MAX_REVOKED)])
    assert len(full) < 40 * 1024
    assert len(verify_revocation_list(full, ca_public, NOW).revoked) == MAX_REVOKED


def test_revocation_list_ids_must_be_sorted_and_unique(ca, ca_public):
    ids = [bytes([1]) * 20, bytes([2]) * 20]
    raw = build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=1, issued=NOW, expires=NOW + 60,
                                revoked=ids)
    body_at = 4 + 1 + 20 + 8 + 8 + 8 + 2
    swapped = raw[:body_at] + ids[1] + ids[0] + raw[body_at + 40 :]
    with pytest.raises(MalformedRecord):
        parse_record(swapped)
    dup = raw[:body_at] + ids[0] + ids[0] + raw[body_at + 40 :]
    with pytest.raises(MalformedRecord):
        parse_record(dup)


def test_a_node_record_and_a_revocation_list_cannot_be_confused(ca, ca_public, alice, rec):
    lst = build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=1, issued=NOW, expires=NOW + 60,
                                revoked=[])
    with pytest.raises(MalformedRecord):
        verify_node_record(lst, ca_public, NOW)
    with pytest.raises(MalformedRecord):
        verify_revocation_list(rec, ca_public, NOW)
    # flipping the type byte: the body no longer parses, or the signature no longer verifies
    with pytest.raises(RecordError):
        verify_revocation_list(rec[:4] + b"\x02" + rec[5:], ca_public, NOW)
    with pytest.raises(RecordError):
        verify_node_record(lst[:4] + b"\x01" + lst[5:], ca_public, NOW)


def test_revoked_set_only_grows_and_keeps_the_newest_list(ca, ca_public, alice, bob):
    def lst(seq, ids):
        raw = build_revocation_list(ca.sign, ca_public_key=ca_public, sequence=seq, issued=NOW,
                                    expires=NOW + 60, revoked=ids)
        return verify_revocation_list(raw, ca_public, NOW)

    s = RevokedSet()
    l1, l0 = lst(5, [alice.peer_id]), lst(4, [bob.peer_id])
    assert s.apply_list(l1) == {alice.peer_id}
    assert s.apply_list(l0) == {bob.peer_id}  # an older list still adds its ids
    assert s.latest is l1
    assert s.add([alice.peer_id, "ab" * 20]) == {"ab" * 20}
    assert alice.peer_id in s and len(s) == 3 and set(s) == {alice.peer_id, bob.peer_id, "ab" * 20}


# ---------------------------------------------------------------- verifier


def test_verifier_checks_signatures_once_but_time_and_revocation_every_time(rec, alice, ca_public):
    revoked = RevokedSet()
    v = RecordVerifier(ca_public, revoked)
    assert v.verify(rec, NOW).peer_id == alice.peer_id
    assert v.verify(rec, NOW).peer_id == alice.peer_id
    assert v.signature_checks == 1
    with pytest.raises(ExpiredRecord):
        v.verify(rec, NOW + 7200)
    revoked.add([alice.peer_id])
    with pytest.raises(RevokedNode):
        v.verify(rec, NOW)


def test_a_shared_cache_serves_verifiers_with_their_own_revocations(rec, alice, ca_public):
    cache = VerifiedDigests()
    strict = RevokedSet([alice.peer_id])
    a, b = RecordVerifier(ca_public, cache=cache), RecordVerifier(ca_public, strict, cache=cache)
    a.verify(rec, NOW)
    with pytest.raises(RevokedNode):
        b.verify(rec, NOW)
    assert b.signature_checks == 0  # the signatures were checked once, by a


def test_verifier_does_not_cache_failures(rec, ca_public):
    v = RecordVerifier(ca_public)
    forged = patch(rec, len(rec) - 100, bytes([rec[-100] ^ 1]))
    for _ in range(2):
        with pytest.raises(BadRecordSignature):
            v.verify(forged, NOW)
    assert v.signature_checks == 2


def test_verifier_cache_is_bounded(ca, ca_public):
    v = RecordVerifier(ca_public, cache=VerifiedDigests(2))
    nodes = [make_node(ca, f"n{i}", f"10.10.10.{100 + i}") for i in range(3)]
    raws = [make_record(n) for n in nodes]
    for raw in raws + raws[:1]:
        v.verify(raw, NOW)
    assert v.signature_checks == 4  # the first was pushed out by the third


def test_next_sequence_is_monotonic_and_follows_the_clock():
    assert next_sequence(None, 1000.5) == 1_000_500
    assert next_sequence(5_000_000, 1000.0) == 5_000_001  # clock behind the last sequence
    assert next_sequence(1_000_500, 1000.5) == 1_000_501
