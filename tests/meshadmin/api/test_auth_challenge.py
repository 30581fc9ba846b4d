"""/api/auth/challenge and /api/auth/verify: ML-DSA-87 challenge/response with context shadowmesh/auth/v1."""

import base64
from datetime import timedelta

import pqcrypto.sign.ml_dsa_87 as pq_mldsa
import pytest
from django.utils import timezone

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, AuthChallenge, Node, SessionToken
from nodeagent.protocol.constants import CONTEXT_AUTH, CONTEXT_CERT
from nodeagent.protocol.identity import peer_id

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _challenge(api, pid: str) -> bytes:
    response = api.post("/api/auth/challenge", {"peer_id": pid})
    assert response.status_code == 200, response.content
    return base64.b64decode(response.json()["challenge"])


def _verify(api, pid: str, challenge: bytes, signature: bytes):
    return api.post(
        "/api/auth/verify", {"peer_id": pid, "challenge": b64(challenge), "signature": b64(signature)}
    )


def _failures(reason: str | None = None):
    events = AuditEvent.objects.filter(action=AuditAction.AUTH_FAILED)
    return [e for e in events if reason is None or e.details.get("reason") == reason]


def test_a_challenge_is_32_random_bytes_valid_for_about_a_minute(api, belgium):
    ident, _ = belgium
    before = timezone.now()
    response = api.post("/api/auth/challenge", {"peer_id": ident.peer_id})
    body = response.json()
    assert len(base64.b64decode(body["challenge"])) == 32
    expires = AuthChallenge.objects.get().expires_at
    assert timedelta(seconds=59) <= expires - before <= timedelta(seconds=61)
    assert _challenge(api, ident.peer_id) != base64.b64decode(body["challenge"])


def test_a_correct_signature_opens_a_session_stored_only_as_a_hash(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    response = _verify(api, ident.peer_id, challenge, ident.sign_auth(challenge))
    assert response.status_code == 200
    body = response.json()
    assert len(body["session_token"]) >= 43
    session = SessionToken.objects.get()
    assert body["session_token"] not in session.token_hash
    assert timedelta(hours=23) < session.expires_at - timezone.now() <= timedelta(hours=24)
    assert AuditEvent.objects.filter(action=AuditAction.AUTH_SUCCEEDED).count() == 1


def test_a_signature_made_with_the_independent_pqcrypto_package_is_accepted(api, make_token):
    pk, sk = pq_mldsa.keygen()
    enroll = api.post("/api/enroll", {"token": make_token(), "name": "pq", "public_key": b64(pk)})
    assert enroll.status_code == 201
    pid = peer_id(pk)
    assert enroll.json()["peer_id"] == pid
    challenge = _challenge(api, pid)
    signature = pq_mldsa.sign(sk, challenge, context=CONTEXT_AUTH)
    response = _verify(api, pid, challenge, signature)
    assert response.status_code == 200, response.content


def test_a_reused_challenge_is_refused(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    signature = ident.sign_auth(challenge)
    assert _verify(api, ident.peer_id, challenge, signature).status_code == 200
    response = _verify(api, ident.peer_id, challenge, signature)
    assert response.status_code == 401
    assert response.json() == {"detail": "challenge is unknown, used or expired"}
    assert len(_failures("challenge already used")) == 1


def test_a_failed_attempt_spends_the_challenge(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    assert _verify(api, ident.peer_id, challenge, b"\0" * 4627).status_code == 401
    assert _verify(api, ident.peer_id, challenge, ident.sign_auth(challenge)).status_code == 401


def test_an_expired_challenge_is_refused(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    AuthChallenge.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _verify(api, ident.peer_id, challenge, ident.sign_auth(challenge))
    assert response.status_code == 401
    assert len(_failures("challenge expired")) == 1


def test_a_challenge_issued_to_another_peer_is_refused(api, belgium, mac):
    belgium_ident, _ = belgium
    mac_ident, _ = mac
    challenge = _challenge(api, belgium_ident.peer_id)
    response = _verify(api, mac_ident.peer_id, challenge, mac_ident.sign_auth(challenge))
    assert response.status_code == 401
    assert len(_failures("challenge issued to another peer")) == 1
    # and mac's signature over belgium's challenge does not help belgium either
    assert _verify(api, belgium_ident.peer_id, challenge, mac_ident.sign_auth(challenge)).status_code == 401


def test_a_signature_under_another_context_is_refused(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    response = _verify(api, ident.peer_id, challenge, ident.key.sign(challenge, CONTEXT_CERT))
    assert response.status_code == 401
    assert response.json() == {"detail": "signature does not verify"}
    assert len(_failures("bad signature")) == 1


def test_a_signature_without_context_is_refused(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    assert _verify(api, ident.peer_id, challenge, ident.key.sign(challenge)).status_code == 401


def test_a_truncated_signature_is_refused(api, belgium):
    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    response = _verify(api, ident.peer_id, challenge, ident.sign_auth(challenge)[:-1])
    assert response.status_code == 401
    assert len(_failures("signature has the wrong length")) == 1


def test_another_nodes_key_cannot_sign_for_a_peer(api, belgium, mac):
    belgium_ident, _ = belgium
    mac_ident, _ = mac
    challenge = _challenge(api, belgium_ident.peer_id)
    assert _verify(api, belgium_ident.peer_id, challenge, mac_ident.sign_auth(challenge)).status_code == 401
    assert len(_failures("bad signature")) == 1


def test_an_unknown_peer_gets_no_challenge(api, identity_factory):
    stranger = identity_factory()
    response = api.post("/api/auth/challenge", {"peer_id": stranger.peer_id})
    assert response.status_code == 401
    assert response.json() == {"detail": "unknown peer"}
    assert len(_failures("unknown peer")) == 1
    assert AuthChallenge.objects.count() == 0


@pytest.mark.parametrize("pid", ["", "zz" * 20, "AB" * 20, "ab" * 19, "ab" * 21])
def test_a_malformed_peer_id_is_refused(api, pid):
    response = api.post("/api/auth/challenge", {"peer_id": pid})
    assert response.status_code == 401
    assert len(_failures("malformed peer id")) == 1


def test_a_revoked_peer_can_neither_get_a_challenge_nor_verify_one(api, belgium):
    from meshadmin.mesh.services.nodes import revoke_node

    ident, _ = belgium
    challenge = _challenge(api, ident.peer_id)
    revoke_node(Node.objects.get(peer_id=ident.peer_id))
    assert _verify(api, ident.peer_id, challenge, ident.sign_auth(challenge)).status_code == 401
    assert api.post("/api/auth/challenge", {"peer_id": ident.peer_id}).status_code == 401
    # both refusals are audited, folded into one event of the same kind from the same address
    assert [e.count for e in _failures("revoked peer")] == [2]


def test_revoking_a_node_ends_its_sessions(api, belgium):
    from meshadmin.mesh.services.nodes import revoke_node

    ident, _ = belgium
    api.login(ident)
    assert api.get(f"/api/peers/{ident.peer_id}").status_code == 404  # authenticated, no record yet
    revoke_node(Node.objects.get(peer_id=ident.peer_id))
    assert api.get(f"/api/peers/{ident.peer_id}").status_code == 401


def test_the_purge_task_deletes_expired_challenges_and_sessions_only(api, belgium):
    from meshadmin.mesh.tasks import purge_expired_credentials

    ident, _ = belgium
    api.login(ident)  # one used challenge, one live session
    _challenge(api, ident.peer_id)  # one live challenge
    assert purge_expired_credentials() == 0
    AuthChallenge.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert purge_expired_credentials() == 2
    assert SessionToken.objects.count() == 1
    SessionToken.objects.update(expires_at=timezone.now())
    assert purge_expired_credentials() == 1
    assert SessionToken.objects.count() == 0
