"""POST /api/enroll: token semantics, certificate, overlay addresses."""

import base64
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from meshadmin.mesh.choices import AuditAction, NodeStatus
from meshadmin.mesh.models import AuditEvent, EnrollmentToken, Node
from nodeagent.protocol.cert import parse_certificate, verify_certificate

pytestmark = pytest.mark.django_db


def test_enrollment_returns_a_certificate_that_verifies_against_the_returned_ca_key(
    api, make_token, identity_factory
):
    ident = identity_factory()
    response = api.enroll(make_token(), ident, "belgium")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"peer_id", "overlay_ip", "certificate", "ca_public_key", "network"}
    assert body["peer_id"] == ident.peer_id
    assert body["network"] == "default"
    cert = verify_certificate(
        base64.b64decode(body["certificate"]), base64.b64decode(body["ca_public_key"]), int(time.time())
    )
    assert cert.peer_id == ident.peer_id
    assert str(cert.overlay_ip) == body["overlay_ip"]
    assert cert.name == "belgium"
    assert cert.network == "default"
    assert cert.public_key == ident.public_key
    assert cert.prefix_len == 24
    assert not cert.is_public
    assert AuditEvent.objects.filter(action=AuditAction.NODE_ENROLLED, object_type="node").count() == 1


def test_enrolled_nodes_get_distinct_addresses_from_the_overlay_prefix(api, make_token, identity_factory):
    addresses = [api.enroll(make_token(), identity_factory(), f"n{i}").json()["overlay_ip"] for i in range(3)]
    assert addresses == ["10.10.10.1", "10.10.10.2", "10.10.10.3"]


def test_a_one_time_token_is_refused_the_second_time_with_an_audit_event(api, make_token, identity_factory):
    token = make_token()
    assert api.enroll(token, identity_factory(), "first").status_code == 201
    response = api.enroll(token, identity_factory(), "second")
    assert response.status_code == 403
    assert "used up" in response.json()["detail"]
    rejected = AuditEvent.objects.get(action=AuditAction.NODE_ENROLL_REJECTED)
    assert rejected.details["reason"] == "enrollment token has been used up"
    assert Node.objects.count() == 1


def test_an_n_use_token_stops_after_n_enrollments(api, make_token, identity_factory):
    token = make_token(uses=3)
    codes = [api.enroll(token, identity_factory(), f"n{i}").status_code for i in range(5)]
    assert codes == [201, 201, 201, 403, 403]
    assert EnrollmentToken.objects.get().uses_left == 0


def test_an_unknown_token_is_refused(api, identity_factory):
    response = api.enroll("not-a-token", identity_factory(), "x")
    assert response.status_code == 403
    assert response.json() == {"detail": "invalid enrollment token"}
    assert AuditEvent.objects.filter(action=AuditAction.NODE_ENROLL_REJECTED).count() == 1


def test_repeated_refusals_from_one_address_are_one_audit_event_with_a_count(api, api_factory,
                                                                            identity_factory):
    for i in range(5):
        assert api.enroll(f"guess-{i}", identity_factory(), f"x{i}").status_code == 403
    assert api_factory("198.18.0.9").enroll("guess", identity_factory(), "y").status_code == 403
    events = AuditEvent.objects.filter(action=AuditAction.NODE_ENROLL_REJECTED)
    assert sorted((e.source_ip, e.count) for e in events) == [("127.0.0.1", 5), ("198.18.0.9", 1)]
    first = events.get(source_ip="127.0.0.1")
    assert first.details["name"] == "x0" and first.details["reason"] == "invalid enrollment token"


def test_an_expired_token_is_refused(api, make_token, identity_factory):
    token = make_token()
    EnrollmentToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.enroll(token, identity_factory(), "late")
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]
    assert AuditEvent.objects.filter(action=AuditAction.NODE_ENROLL_REJECTED).exists()


def test_a_revoked_token_is_refused(api, make_token, identity_factory):
    from meshadmin.mesh.services.tokens import revoke_token

    token = make_token(uses=5)
    revoke_token(EnrollmentToken.objects.get())
    response = api.enroll(token, identity_factory(), "x")
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]
    assert EnrollmentToken.objects.get().uses_left == 5
    rejected = AuditEvent.objects.get(action=AuditAction.NODE_ENROLL_REJECTED)
    assert rejected.details["reason"] == "enrollment token has been revoked"


def test_a_public_node_needs_a_public_token(api, make_token, identity_factory):
    response = api.enroll(make_token(), identity_factory(), "hub", is_public=True)
    assert response.status_code == 403
    assert "public" in response.json()["detail"]
    assert EnrollmentToken.objects.get().uses_left == 1


def test_a_public_token_enrolls_a_public_relay_node(api, make_token, identity_factory):
    response = api.enroll(make_token(is_public=True), identity_factory(), "uk", is_public=True)
    assert response.status_code == 201
    body = response.json()
    cert = verify_certificate(
        base64.b64decode(body["certificate"]), base64.b64decode(body["ca_public_key"]), int(time.time())
    )
    assert cert.is_public and cert.is_relay
    node = Node.objects.get(peer_id=body["peer_id"])
    assert node.is_public and node.is_relay


def test_the_endpoint_given_at_enrollment_is_stored(api, make_token, identity_factory):
    response = api.enroll(make_token(), identity_factory(), "belgium", endpoint="198.18.0.4:8443")
    node = Node.objects.get(peer_id=response.json()["peer_id"])
    assert (node.endpoint_ip, node.control_port) == ("198.18.0.4", 8443)


@pytest.mark.parametrize("endpoint", ["198.18.0.4", "host:8443", "198.18.0.4:0", "198.18.0.4:70000", ":1"])
def test_a_malformed_endpoint_is_a_400_naming_the_field(api, make_token, identity_factory, endpoint):
    response = api.enroll(make_token(), identity_factory(), "x", endpoint=endpoint)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("endpoint:")
    assert EnrollmentToken.objects.get().uses_left == 1


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [("127.0.0.1:8443", "loopback"), ("0.0.0.0:8443", "unspecified"), ("169.254.169.254:80", "link-local"),
     ("224.0.0.1:8443", "multicast"), ("255.255.255.255:8443", "broadcast"), ("[::1]:8443", "loopback"),
     ("[fe80::1]:8443", "link-local"), ("198.18.0.4:²", "IP:PORT")],
)
def test_an_endpoint_no_peer_should_be_sent_to_is_a_400_and_spends_nothing(api, make_token, identity_factory,
                                                                            endpoint, why):
    """Attack 5 of issue 9: a node would steer every peer's dialer there from its enrollment on."""
    response = api.enroll(make_token(), identity_factory(), "x", endpoint=endpoint)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("endpoint:") and why in response.json()["detail"]
    assert EnrollmentToken.objects.get().uses_left == 1 and not Node.objects.exists()


def test_a_public_key_of_the_wrong_size_is_a_400(api, make_token):
    response = api.post(
        "/api/enroll",
        {"token": make_token(), "name": "x", "public_key": base64.b64encode(b"k" * 32).decode()},
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("public_key:")


@pytest.mark.parametrize("name", ["", "   ", "a" * 64, "tab\tname", "é" * 32])
def test_a_bad_node_name_is_a_400(api, make_token, identity_factory, name):
    response = api.enroll(make_token(), identity_factory(), name)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("name:")


def test_a_revoked_nodes_key_cannot_enroll_again(api, make_token, identity_factory):
    from meshadmin.mesh.services.nodes import revoke_node

    ident = identity_factory()
    api.enroll(make_token(), ident, "stolen")
    revoke_node(Node.objects.get(peer_id=ident.peer_id))
    response = api.enroll(make_token(), ident, "stolen-again")
    assert response.status_code == 403
    assert "revoked" in response.json()["detail"]
    assert AuditEvent.objects.filter(
        action=AuditAction.NODE_ENROLL_REJECTED, object_id=ident.peer_id
    ).exists()
    assert EnrollmentToken.objects.filter(uses_left=1).count() == 1


def test_an_already_enrolled_key_is_a_conflict_and_keeps_the_token(api, make_token, identity_factory):
    ident = identity_factory()
    api.enroll(make_token(), ident, "twice")
    token = make_token()
    response = api.enroll(token, ident, "twice")
    assert response.status_code == 409
    assert EnrollmentToken.objects.filter(uses_left=1).count() == 1


def test_a_full_pool_answers_409_and_gives_the_token_use_back(api, identity_factory):
    from meshadmin.mesh.services.networks import create_network
    from meshadmin.mesh.services.tokens import create_token

    tiny = create_network("tiny", "10.20.0.0/30")
    token = create_token(tiny, uses=3)[1]
    codes = [api.enroll(token, identity_factory(), f"n{i}").status_code for i in range(3)]
    assert codes == [201, 201, 409]
    last = api.enroll(token, identity_factory(), "n3")
    assert last.status_code == 409
    assert "no free address" in last.json()["detail"]
    assert EnrollmentToken.objects.get(network=tiny).uses_left == 1


def test_deleting_a_node_frees_its_address_for_the_next_enrollment(api, make_token, identity_factory):
    from meshadmin.mesh.services.nodes import delete_node

    first = api.enroll(make_token(), identity_factory(), "a").json()
    api.enroll(make_token(), identity_factory(), "b")
    delete_node(Node.objects.get(peer_id=first["peer_id"]))
    third = api.enroll(make_token(), identity_factory(), "c").json()
    assert third["overlay_ip"] == first["overlay_ip"]


def test_revoking_a_node_frees_its_address_but_keeps_the_row(api, make_token, identity_factory):
    from meshadmin.mesh.services.nodes import revoke_node

    first = api.enroll(make_token(), identity_factory(), "a").json()
    node = revoke_node(Node.objects.get(peer_id=first["peer_id"]))
    assert node.status == NodeStatus.REVOKED and node.overlay_ip is None
    assert api.enroll(make_token(), identity_factory(), "b").json()["overlay_ip"] == first["overlay_ip"]


def test_a_revoked_node_cannot_be_deleted_so_its_key_stays_refused_and_on_the_revocation_list(
    api, make_token, identity_factory
):
    from meshadmin.mesh.services import ServiceError
    from meshadmin.mesh.services.nodes import delete_node, revoke_node
    from meshadmin.netmap import snapshot

    ident = identity_factory()
    first = api.enroll(make_token(), ident, "lost-laptop").json()
    node = revoke_node(Node.objects.get(peer_id=first["peer_id"]))
    with pytest.raises(ServiceError) as refused:
        delete_node(node)
    assert refused.value.status == 409
    assert Node.objects.filter(peer_id=ident.peer_id, status=NodeStatus.REVOKED).exists()
    revoked = [n.peer_id for n in snapshot.load(node.network).nodes if not n.active]
    assert ident.peer_id in revoked
    again = api.enroll(make_token(), ident, "lost-laptop")
    assert again.status_code == 403


def test_an_address_taken_by_a_concurrent_enrollment_is_retried(
    api, make_token, identity_factory, monkeypatch
):
    """Simulate losing the IPAM race: the allocator first proposes an address that is already taken."""
    from meshadmin.mesh.services import enrollment

    first = api.enroll(make_token(), identity_factory(), "a").json()["overlay_ip"]
    real = enrollment.next_free_address
    proposals = []

    def stale_then_real(prefix, used, reserved=()):
        proposals.append(first if not proposals else str(real(prefix, used, reserved)))
        return proposals[-1]

    monkeypatch.setattr(enrollment, "next_free_address", stale_then_real)
    response = api.enroll(make_token(), identity_factory(), "b")
    assert response.status_code == 201
    assert proposals[0] == first and response.json()["overlay_ip"] == proposals[1] != first
    # the certificate (issued with the INSERT) names the address the node got, not the lost one
    issued = base64.b64decode(response.json()["certificate"])
    assert str(parse_certificate(issued).overlay_ip) == proposals[1]
    node = Node.objects.get(name="b")
    assert bytes(node.certificate) == issued
    assert node.certificate_fingerprint == parse_certificate(issued).fingerprint != ""
    assert node.certificate_expires_at is not None


# --- the CA fingerprint inside the token (docs/protocol.md#enrollment-tokens)


def test_a_token_carries_the_fingerprint_of_its_networks_ca(network, make_token):
    from nodeagent.protocol.enroll_token import fingerprint_matches, parse_token

    parsed = parse_token(make_token())
    assert parsed.fingerprint is not None
    assert fingerprint_matches(parsed.fingerprint, bytes(network.ca_public_key))
    # only the secret is stored, hashed
    row = EnrollmentToken.objects.get()
    assert parsed.secret.startswith(row.prefix) and parsed.secret not in row.token_hash


def test_a_token_with_another_cas_fingerprint_is_refused_and_not_spent(api, make_token, identity_factory):
    from nodeagent.protocol.enroll_token import make_token as compose
    from nodeagent.protocol.enroll_token import parse_token

    token = make_token()
    forged = compose(parse_token(token).secret, b"\x07" * 2592)
    response = api.enroll(forged, identity_factory(), "belgium")
    assert response.status_code == 403 and "fingerprint" in response.json()["detail"]
    assert EnrollmentToken.objects.get().uses_left == 1
    assert api.enroll(token, identity_factory(), "belgium").status_code == 201


def test_an_old_form_token_without_a_fingerprint_still_enrolls(api, make_token, identity_factory):
    """The server accepts the secret alone (tokens made before fingerprints); the agent decides
    whether it may trust the answer (only over https: nodeagent/enroll.py)."""
    from nodeagent.protocol.enroll_token import parse_token

    secret = parse_token(make_token()).secret
    assert api.enroll(secret, identity_factory(), "belgium").status_code == 201
