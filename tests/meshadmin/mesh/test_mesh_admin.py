"""The Django admin: key material read-only, no CA private key, writes through the services."""

import base64

import pytest

from meshadmin.mesh.choices import AuditAction, NodeStatus
from meshadmin.mesh.models import AuditEvent, Network, Node

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "a-long-test-password")
    client.force_login(user)
    return client


def test_every_mesh_changelist_renders(operator, belgium):
    for model in (
        "network",
        "node",
        "enrollmenttoken",
        "route",
        "auditevent",
        "authchallenge",
        "sessiontoken",
    ):
        response = operator.get(f"/admin/mesh/{model}/")
        assert response.status_code == 200, model


def test_the_network_page_shows_no_ca_private_key(operator, network):
    response = operator.get(f"/admin/mesh/network/{network.pk}/change/")
    assert response.status_code == 200
    page = response.content
    sealed = bytes(network.ca_private_sealed)
    assert base64.b64encode(sealed) not in page and sealed.hex().encode() not in page
    assert b"ca_private" not in page
    assert b"CA id" in page


def test_node_key_material_is_read_only_and_the_name_is_edited_through_the_service(operator, belgium):
    ident, _ = belgium
    node = Node.objects.get(peer_id=ident.peer_id)
    page = operator.get(f"/admin/mesh/node/{node.pk}/change/").content.decode()
    assert 'name="name"' in page
    for field in ("public_key", "certificate", "peer_id", "overlay_ip", "status"):
        assert f'name="{field}"' not in page, field
    serial = Network.objects.get().serial
    response = operator.post(f"/admin/mesh/node/{node.pk}/change/", {"name": "brussels"})
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.name == "brussels"
    assert Network.objects.get().serial == serial + 1
    assert AuditEvent.objects.get(action=AuditAction.NODE_RENAMED).actor == "user:operator"


def test_the_revoke_action_revokes_through_the_service(operator, belgium):
    ident, _ = belgium
    node = Node.objects.get(peer_id=ident.peer_id)
    response = operator.post(
        "/admin/mesh/node/", {"action": "revoke_selected", "_selected_action": [node.pk]}
    )
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.status == NodeStatus.REVOKED and node.overlay_ip is None
    assert AuditEvent.objects.filter(action=AuditAction.NODE_REVOKED, actor="user:operator").exists()


def test_tokens_and_audit_events_cannot_be_added_or_edited_in_the_admin(operator, make_token):
    make_token()
    assert operator.get("/admin/mesh/enrollmenttoken/add/").status_code == 403
    assert operator.get("/admin/mesh/auditevent/add/").status_code == 403
    event = AuditEvent.objects.first()
    assert operator.post(f"/admin/mesh/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_a_network_added_in_the_admin_gets_a_ca_key(operator):
    response = operator.post("/admin/mesh/network/add/", {"name": "lab", "overlay_cidr": "10.40.0.0/24"})
    assert response.status_code == 302
    lab = Network.objects.get(name="lab")
    assert len(bytes(lab.ca_public_key)) == 2592
    assert AuditEvent.objects.filter(action=AuditAction.NETWORK_CREATED, actor="user:operator").exists()
