"""A renewed certificate is what the agent presents from its next handshake on (issue 9 item 8)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.protocol.handshake_errors import BadCredential
from nodeagent.protocol.trust import LocalIdentity, MeshCA
from tests.nodeagent.protocol.conftest import NOW
from tests.nodeagent.protocol.test_handshake import run


def test_an_expired_certificate_replaced_by_its_renewal_handshakes_again(belgium, starlink, ca, ca_public,
                                                                         issue):
    expired = issue(ca, starlink.public_key, "starlink", "10.10.10.6", not_before=NOW - 100,
                    not_after=NOW - 1)
    local = LocalIdentity(starlink.key, expired)
    parties = (LocalIdentity(belgium.key, belgium.cert), MeshCA(ca_public), local, MeshCA(ca_public))
    with pytest.raises(BadCredential):
        run(parties)
    local.replace_credential(issue(ca, starlink.public_key, "starlink", "10.10.10.6",
                                   not_before=NOW - 1, not_after=NOW + 3600))
    initiator_result, _ = run(parties)
    assert initiator_result.peer.peer_id == starlink.peer_id


def test_a_certificate_for_another_key_is_not_taken(starlink, belgium, ca):
    local = LocalIdentity(starlink.key, starlink.cert)
    with pytest.raises(BadCredential, match="another key"):
        local.replace_credential(belgium.cert)
    with pytest.raises(BadCredential):
        local.replace_credential(mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw())
    assert local.credential == starlink.cert


def test_both_sides_learn_when_the_others_certificate_ends(belgium, starlink, ca, ca_public, issue):
    """What Handshakes.install ends the keys with (Keypair.ends_at)."""
    short = issue(ca, starlink.public_key, "starlink", "10.10.10.6", not_before=NOW - 1, not_after=NOW + 60)
    parties = (LocalIdentity(belgium.key, belgium.cert), MeshCA(ca_public),
               LocalIdentity(starlink.key, short), MeshCA(ca_public))
    initiator_result, responder_result = run(parties)
    assert initiator_result.peer.not_after == NOW + 60
    assert responder_result.peer.not_after is not None and responder_result.peer.not_after > NOW + 60
