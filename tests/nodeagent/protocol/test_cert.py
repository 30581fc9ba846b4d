"""Mesh certificates: round trips, every tampered region fails, wrong CA, validity, contexts."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol.cert import (
    BadSignature,
    CertFlags,
    CertificateError,
    ExpiredCertificate,
    MalformedCertificate,
    UnknownIssuer,
    ca_id,
    issue_certificate,
    parse_certificate,
    verify_certificate,
)
from nodeagent.protocol.constants import CONTEXT_CERT, CONTEXT_HANDSHAKE

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def cert(ca, belgium):
    return belgium.cert


def regions(cert_bytes):
    """(name, start, end) of every field of a v4 certificate."""
    name_len = cert_bytes[68]
    pos = 69 + name_len
    net_len = cert_bytes[pos]
    net_start = pos + 1
    pk_len_at = net_start + net_len
    pk_at = pk_len_at + 2
    sig_len_at = pk_at + 2592
    sig_at = sig_len_at + 2
    return [
        ("magic", 0, 4), ("version", 4, 5), ("flags", 5, 6), ("not_before", 6, 14),
        ("not_after", 14, 22), ("ca_id", 22, 42), ("peer_id", 42, 62), ("ip_version", 62, 63),
        ("overlay_ip", 63, 67), ("prefix_len", 67, 68), ("name length", 68, 69),
        ("name", 69, 69 + name_len), ("network length", pos, pos + 1), ("network", net_start, pk_len_at),
        ("public key length", pk_len_at, pk_at), ("public key", pk_at, sig_len_at),
        ("signature length", sig_len_at, sig_at), ("signature", sig_at, len(cert_bytes)),
    ]


def test_issued_certificate_verifies_and_carries_its_fields(cert, ca_public, belgium):
    c = verify_certificate(cert, ca_public, NOW)
    assert (c.peer_id, c.name, c.network, c.overlay_ip, c.prefix_len) == (
        belgium.peer_id, "belgium", "lab", ipaddress.ip_address("10.10.10.5"), 24)
    assert c.public_key == belgium.public_key and c.ca_id == ca_id(ca_public)
    assert c.to_bytes() == cert


def test_region_table_covers_the_whole_certificate(cert):
    rs = regions(cert)
    assert rs[0][1] == 0 and rs[-1][2] == len(cert)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(rs))


@pytest.mark.parametrize("index", range(18))
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_tampered_byte_in_any_region_is_refused(cert, ca_public, index, where):
    _name, start, end = regions(cert)[index]
    pos = start if where == "first" else end - 1
    bad = bytearray(cert)
    bad[pos] ^= 0x01
    with pytest.raises(CertificateError):
        verify_certificate(bytes(bad), ca_public, NOW)


def test_trailing_byte_is_refused(cert, ca_public):
    with pytest.raises(MalformedCertificate, match="trailing"):
        verify_certificate(cert + b"\x00", ca_public, NOW)


@pytest.mark.parametrize("cut", [0, 1, 21, 100, 2700, -1])
def test_truncated_certificate_is_refused(cert, cut):
    with pytest.raises(MalformedCertificate):
        parse_certificate(cert[:cut])


def test_certificate_from_another_ca_is_refused(cert):
    other = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(UnknownIssuer):
        verify_certificate(cert, other, NOW)


def test_certificate_claiming_our_ca_but_signed_by_another_is_refused(ca_public, belgium):
    rogue = mldsa.MLDSA87PrivateKey.generate()
    forged = bytearray(issue_certificate(rogue, public_key=belgium.public_key, name="belgium", network="lab",
                                         overlay_ip="10.10.10.5", prefix_len=24, flags=0,
                                         not_before=NOW - 10, not_after=NOW + 10))
    forged[22:42] = ca_id(ca_public)
    with pytest.raises(BadSignature):
        verify_certificate(bytes(forged), ca_public, NOW)


@pytest.mark.parametrize(("now", "ok"), [(NOW - 3600, True), (NOW - 3601, False), (NOW + 86399, True),
                                         (NOW + 86400, False)])
def test_validity_period_is_enforced_at_both_ends(cert, ca_public, now, ok):
    if ok:
        verify_certificate(cert, ca_public, now)
    else:
        with pytest.raises(ExpiredCertificate):
            verify_certificate(cert, ca_public, now)


def test_signature_made_under_a_foreign_context_is_refused(ca, ca_public, cert):
    c = parse_certificate(cert)
    for context in (CONTEXT_HANDSHAKE, b""):
        sig = ca.sign(c.tbs, context)
        relabelled = c.tbs + len(sig).to_bytes(2, "big") + sig
        with pytest.raises(BadSignature):
            verify_certificate(relabelled, ca_public, NOW)
    good = ca.sign(c.tbs, CONTEXT_CERT)
    verify_certificate(c.tbs + len(good).to_bytes(2, "big") + good, ca_public, NOW)


def test_resigned_certificate_keeps_its_fingerprint_and_peer_id(ca, cert):
    c = parse_certificate(cert)
    sig = ca.sign(c.tbs, CONTEXT_CERT)
    again = parse_certificate(c.tbs + len(sig).to_bytes(2, "big") + sig)
    assert again.signature != c.signature
    assert (again.fingerprint, again.peer_id) == (c.fingerprint, c.peer_id)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flags": 4},
        {"not_before": 10, "not_after": 10},
        {"public_key": bytes(100)},
        {"prefix_len": 33},
        {"name": ""},
        {"name": "x" * 64},
        {"name": "bad\nname"},
        {"network": "\x7f"},
    ],
)
def test_issuing_refuses_bad_fields(ca, belgium, kwargs):
    args = {"public_key": belgium.public_key, "name": "n", "network": "lab", "overlay_ip": "10.10.10.9",
            "prefix_len": 24, "flags": 0, "not_before": 0, "not_after": 10}
    args.update(kwargs)
    with pytest.raises(MalformedCertificate):
        issue_certificate(ca, **args)


def test_ipv6_and_all_zero_key_round_trip(ca, ca_public):
    raw = issue_certificate(ca, public_key=bytes(2592), name="z", network="lab", overlay_ip="fd00::1",
                            prefix_len=64, flags=CertFlags.PUBLIC | CertFlags.RELAY,
                            not_before=0, not_after=1)
    c = verify_certificate(raw, ca_public, 0)
    assert c.overlay_ip == ipaddress.ip_address("fd00::1") and c.is_public and c.is_relay
    assert c.public_key == bytes(2592) and c.to_bytes() == raw


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_certificate_errors(data):
    with pytest.raises(CertificateError):
        parse_certificate(data)


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, 8000), value=st.integers(0, 255), cut=st.booleans())
def test_mutated_certificate_only_raises_certificate_errors(belgium, ca_public, pos, value, cut):
    cert = belgium.cert
    if cut:
        data = cert[: pos % len(cert)]
    else:
        data = bytearray(cert)
        data[pos % len(cert)] = value
        data = bytes(data)
    try:
        verify_certificate(data, ca_public, NOW)
    except CertificateError:
        return
    assert data == cert
