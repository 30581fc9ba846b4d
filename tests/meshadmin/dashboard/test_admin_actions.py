"""What staff can do from the dashboard; every action goes through a service and is audited."""

import re

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from meshadmin.mesh.choices import AuditAction, NodeStatus
from meshadmin.mesh.models import AuditEvent, EnrollmentToken, Node, Route

pytestmark = pytest.mark.django_db


def _command(html: str) -> str:
    match = re.search(r'<pre id="enroll-command"[^>]*>(.*?)</pre>', html, re.S)
    assert match, "the enroll command is on the page"
    return match.group(1).strip()


def test_a_new_token_is_shown_once_as_a_working_enroll_command_with_a_qr_code(admin, network, csrf_post):
    from meshadmin.mesh.services.enrollment import enroll

    response = csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "24h",
                                                "node_name": "kitchen-pi"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    command = _command(html)
    parts = command.split()
    assert parts[:2] == ["shadowmesh-agent", "enroll"]
    args = dict(zip(parts[2::2], parts[3::2], strict=True))
    assert args["--server"] == "http://testserver"
    assert args["--name"] == "kitchen-pi"
    assert args["--state-dir"] == "/var/lib/shadowmesh"
    token = args["--token"]
    assert "<svg" in html and "QR code" in html

    row = EnrollmentToken.objects.get()
    assert token not in (row.token_hash, row.prefix) and token.startswith(row.prefix)
    assert token not in admin.get("/tokens/").content.decode(), "the list never shows the token again"

    key = mldsa.MLDSA87PrivateKey.generate()
    node = enroll(token=token, name="kitchen-pi", public_key=key.public_key().public_bytes_raw()).node
    assert node.network == network
    audit = AuditEvent.objects.filter(action=AuditAction.TOKEN_CREATED).get()
    assert audit.actor == "user:alice" and token not in str(audit.details)


def test_token_options_become_uses_expiry_and_public(admin, network, csrf_post):
    response = csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 5, "expires": "7d",
                                                "is_public": "on"})
    assert _command(response.content.decode()).endswith(" --public")
    token = EnrollmentToken.objects.get()
    assert (token.max_uses, token.uses_left, token.is_public) == (5, 5, True)
    assert 6.9 < (token.expires_at - token.created_at).total_seconds() / 86400 < 7.1


def test_an_ephemeral_token_is_made_and_listed_as_such(admin, network, csrf_post):
    csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "24h"})
    response = csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "24h",
                                                "ephemeral": "on"})
    assert response.status_code == 200
    assert list(EnrollmentToken.objects.order_by("pk").values_list("ephemeral", flat=True)) == [False, True]
    page = admin.get("/tokens/").content.decode()
    assert page.count('data-testid="ephemeral"') == 1


def test_the_first_token_on_a_fresh_install_creates_the_default_network(admin, csrf_post, db):
    response = csrf_post(admin, "/tokens/new", {"uses": 1, "expires": "1h"})
    assert response.status_code == 200, response.content[:500]
    assert EnrollmentToken.objects.get().network.name == "default"


def test_bad_token_input_is_refused_with_the_form_shown_again(admin, network, csrf_post):
    response = csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 0, "expires": "forever"})
    assert response.status_code == 400
    assert not EnrollmentToken.objects.exists()
    assert "errors" in response.content.decode()


def test_revoking_a_token_from_the_list(admin, network, csrf_post):
    from meshadmin.mesh.services.tokens import create_token

    token, _ = create_token(network)
    response = csrf_post(admin, f"/tokens/{token.pk}/revoke")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKED, actor="user:alice").exists()


def test_revoke_asks_for_confirmation_before_anything_happens(admin, mesh, csrf_post):
    node = mesh["belgium"]
    page = admin.get(f"/nodes/{node.peer_id}/revoke")
    assert page.status_code == 200 and "Revoke node" in page.content.decode()
    assert Node.objects.get(pk=node.pk).status == NodeStatus.ACTIVE
    response = csrf_post(admin, f"/nodes/{node.peer_id}/revoke")
    assert response.status_code == 302
    node.refresh_from_db()
    assert node.status == NodeStatus.REVOKED and node.overlay_ip is None
    assert AuditEvent.objects.filter(action=AuditAction.NODE_REVOKED, actor="user:alice").exists()
    assert "revoked" in admin.get("/nodes/").content.decode()


def test_revoking_twice_reports_the_conflict_instead_of_failing(admin, mesh, csrf_post):
    node = mesh["belgium"]
    csrf_post(admin, f"/nodes/{node.peer_id}/revoke")
    response = csrf_post(admin, f"/nodes/{node.peer_id}/revoke")
    assert response.status_code == 302
    assert "already revoked" in admin.get(response["Location"]).content.decode()


def test_rename_and_delete_a_node(admin, mesh, csrf_post):
    node = mesh["belgium"]
    csrf_post(admin, f"/nodes/{node.peer_id}/rename", {"name": "brussels"})
    assert Node.objects.get(pk=node.pk).name == "brussels"
    response = csrf_post(admin, f"/nodes/{node.peer_id}/rename", {"name": "x" * 64})
    assert Node.objects.get(pk=node.pk).name == "brussels"
    assert response.status_code == 302
    response = csrf_post(admin, f"/nodes/{node.peer_id}/delete")
    assert response.status_code == 302 and response["Location"] == "/nodes/"
    assert not Node.objects.filter(pk=node.pk).exists()
    kinds = set(AuditEvent.objects.filter(actor="user:alice").values_list("action", flat=True))
    assert {AuditAction.NODE_RENAMED, AuditAction.NODE_DELETED} <= kinds


def test_routes_are_advertised_pending_then_approved_or_rejected(admin, mesh, csrf_post):
    uk = mesh["uk"]
    csrf_post(admin, "/routes/new", {"via": uk.pk, "prefix": "192.168.1.0/24"})
    csrf_post(admin, "/routes/new", {"via": uk.pk, "prefix": "192.168.2.0/24"})
    first, second = Route.objects.order_by("prefix")
    assert (first.approved, second.approved) == (False, False)
    assert "pending" in admin.get("/routes/").content.decode()
    csrf_post(admin, f"/routes/{first.pk}/approve")
    csrf_post(admin, f"/routes/{second.pk}/reject")
    assert list(Route.objects.values_list("prefix", "approved")) == [("192.168.1.0/24", True)]
    response = csrf_post(admin, "/routes/new", {"via": uk.pk, "prefix": "not-a-prefix"})
    assert response.status_code == 302
    assert "not a network prefix" in admin.get("/routes/").content.decode()
    assert Route.objects.count() == 1


def test_the_node_page_can_advertise_a_route_for_that_node(admin, mesh, csrf_post):
    page = admin.get(f"/nodes/{mesh['uk'].peer_id}/").content.decode()
    assert f'name="via" value="{mesh["uk"].pk}"' in page
    csrf_post(admin, "/routes/new", {"via": mesh["uk"].pk, "prefix": "172.16.0.0/12", "approve": "on"})
    assert Route.objects.get().approved is True
