"""Trust modes on their own: pinned keys (serverless) and the mesh CA (enrolled), our own identity.

The handshake tests drive the same checks through HELLO → CHALLENGE → CONFIRM; these call
knows() / authenticate() directly, so each refusal is pinned to its error kind.
"""

from __future__ import annotations

import ipaddress

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.handshake_errors import BadCredential, RevokedPeer, UnknownPeer, WrongAddress
from nodeagent.protocol.opcount import COUNTS
from nodeagent.protocol.trust import LocalIdentity, MeshCA, PeerIdentity, PinnedKeys

NOW = 1_800_000_000  # same fixed "now" as conftest.py


# --- pinned keys ------------------------------------------------------------------------------


def test_pinned_keys_know_and_authenticate_exactly_the_pinned_keys(belgium, starlink, uk):
    trust = PinnedKeys({belgium.peer_id: belgium.public_key, starlink.peer_id: starlink.public_key})
    assert trust.knows(belgium.peer_id) and trust.knows(starlink.peer_id)
    assert not trust.knows(uk.peer_id)
    assert trust.authenticate(belgium.public_key, NOW) == PeerIdentity(belgium.peer_id, belgium.public_key)
    with pytest.raises(UnknownPeer):
        trust.authenticate(uk.public_key, NOW)


def test_pinned_keys_accept_a_plain_list_of_keys(belgium):
    assert PinnedKeys([belgium.public_key]).knows(belgium.peer_id)


def test_pinned_keys_refuse_a_certificate_as_credential(belgium):
    with pytest.raises(BadCredential):
        PinnedKeys([belgium.public_key]).authenticate(belgium.cert, NOW)


def test_pinned_keys_refuse_a_key_under_the_wrong_peer_id(belgium, starlink):
    with pytest.raises(BadCredential):
        PinnedKeys({belgium.peer_id: starlink.public_key})
    with pytest.raises(BadCredential):
        PinnedKeys([b"short"])


# --- mesh CA ----------------------------------------------------------------------------------


def test_mesh_ca_authenticates_a_certificate_as_its_certified_identity(uk, ca_public):
    peer = MeshCA(ca_public).authenticate(uk.cert, NOW)
    assert (peer.peer_id, peer.public_key, peer.name) == (uk.peer_id, uk.public_key, "uk")
    assert peer.overlay_ip == ipaddress.ip_address("10.10.10.3")
    assert peer.is_public and peer.is_relay


def test_mesh_ca_refuses_certificates_of_another_ca_expired_or_bare_keys(starlink, ca, ca_public, issue):
    trust = MeshCA(ca_public)
    rogue = mldsa.MLDSA87PrivateKey.generate()
    for credential in (
        issue(rogue, starlink.public_key, "starlink", "10.10.10.6"),
        issue(ca, starlink.public_key, "starlink", "10.10.10.6", not_before=NOW - 100, not_after=NOW - 1),
        starlink.public_key,
    ):
        with pytest.raises(BadCredential):
            trust.authenticate(credential, NOW)


def test_a_revoked_peer_is_unknown_and_its_certificate_refused(belgium, starlink, ca_public):
    trust = MeshCA(ca_public, revoked_peer_ids=[belgium.peer_id])
    assert not trust.knows(belgium.peer_id) and trust.knows(starlink.peer_id)
    with pytest.raises(RevokedPeer):
        trust.authenticate(belgium.cert, NOW)
    trust.revoke(starlink.peer_id)
    assert not trust.knows(starlink.peer_id)
    with pytest.raises(RevokedPeer):
        trust.authenticate(starlink.cert, NOW)


def test_a_known_list_restricts_the_mesh_ca_to_those_peers(belgium, uk, ca_public):
    trust = MeshCA(ca_public, known_peer_ids=[uk.peer_id])
    assert trust.knows(uk.peer_id) and not trust.knows(belgium.peer_id)
    assert trust.authenticate(uk.cert, NOW).peer_id == uk.peer_id
    with pytest.raises(UnknownPeer):
        trust.authenticate(belgium.cert, NOW)
    assert MeshCA(ca_public, known_peer_ids=()).knows(uk.peer_id) is False


def test_the_overlay_address_must_be_the_one_the_netmap_gives_the_peer(uk, belgium, ca_public):
    """Issue 9, item 9: the certificate names 10.10.10.3; `overlay_of` is what the applied netmap says."""
    placed = {uk.peer_id: ipaddress.ip_address("10.10.10.3"),
              belgium.peer_id: ipaddress.ip_address("10.10.10.99")}
    trust = MeshCA(ca_public, overlay_of=placed.get)
    assert trust.authenticate(uk.cert, NOW).overlay_ip == placed[uk.peer_id]
    with pytest.raises(WrongAddress):
        trust.authenticate(belgium.cert, NOW)  # certified at 10.10.10.5
    with pytest.raises(UnknownPeer):
        MeshCA(ca_public, overlay_of=lambda pid: None).authenticate(uk.cert, NOW)  # not in the netmap


def test_a_verified_certificate_is_not_verified_again_but_everything_else_is_checked(uk, ca_public):
    trust = MeshCA(ca_public, known_peer_ids=[uk.peer_id])
    before = COUNTS.snapshot()
    trust.authenticate(uk.cert, NOW)
    trust.authenticate(uk.cert, NOW + 1)
    assert COUNTS.since(before)["verifications"] == 1
    with pytest.raises(BadCredential):  # still checked: its validity period
        trust.authenticate(uk.cert, NOW + 10 * 86400)
    tampered = bytearray(uk.cert)
    tampered[-1] ^= 1  # other bytes: verified (and refused) afresh
    with pytest.raises(BadCredential):
        trust.authenticate(bytes(tampered), NOW)
    trust.known = set()  # uk left the netmap: refused, and its certificate forgotten
    with pytest.raises(UnknownPeer):
        trust.authenticate(uk.cert, NOW)
    trust.known = {uk.peer_id}
    before = COUNTS.snapshot()
    trust.authenticate(uk.cert, NOW)
    assert COUNTS.since(before)["verifications"] == 1
    trust.revoke(uk.peer_id)
    with pytest.raises(RevokedPeer):
        trust.authenticate(uk.cert, NOW)


def test_the_ca_key_must_be_an_ml_dsa_87_key():
    with pytest.raises(BadCredential):
        MeshCA(b"\x00" * 32)


# --- our own identity -------------------------------------------------------------------------


def test_local_identity_presents_its_key_or_its_certificate(belgium):
    pinned = LocalIdentity.pinned(belgium.key)
    assert (pinned.peer_id, pinned.public_key, pinned.credential) == (
        belgium.peer_id, belgium.public_key, belgium.public_key)
    assert LocalIdentity(belgium.key, belgium.cert).credential == belgium.cert


def test_local_identity_refuses_a_credential_for_another_key(belgium, starlink):
    with pytest.raises(BadCredential):
        LocalIdentity(belgium.key, starlink.cert)
    with pytest.raises(BadCredential):
        LocalIdentity(belgium.key, starlink.public_key)
