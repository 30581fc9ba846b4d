"""Who may see and change what: login everywhere, viewers read only, others nothing, CSRF on forms."""

import pytest
from django.test import Client
from django.urls import reverse

from meshadmin.mesh.choices import NodeStatus
from meshadmin.mesh.models import (
    AccessRule,
    ApiKey,
    AuditEvent,
    EnrollmentToken,
    Group,
    Network,
    Node,
    Route,
    Tag,
)

pytestmark = pytest.mark.django_db


def read_pages(mesh):
    pid = mesh["uk"].peer_id
    return [
        "/",
        "/map/",
        "/map/graph.json",
        "/nodes/",
        f"/nodes/{pid}/",
        f"/nodes/{pid}/series.json",
        f"/nodes/{pid}/revoke",
        f"/nodes/{pid}/delete",
        "/tokens/",
        "/tokens/new",
        "/routes/",
        "/policy/",
        f"/nodes/{pid}/reach",
        "/audit/",
        "/apikeys/",
        "/apikeys/new",
    ]


def write_requests(mesh, route, token, rule, apikey):
    pid = mesh["belgium"].peer_id
    return [
        ("/policy/default", {"default": "deny"}),
        ("/policy/rules/new", {"sources": "*", "destinations": "node:uk", "protocol": "tcp", "ports": "22"}),
        (f"/policy/rules/{rule.pk}/", {"sources": "*", "destinations": "node:uk", "protocol": "udp"}),
        (f"/policy/rules/{rule.pk}/move", {"position": "1"}),
        (f"/policy/rules/{rule.pk}/delete", {}),
        ("/policy/tags/new", {"name": "db"}),
        (f"/policy/tags/{rule.tag.pk}/delete", {}),
        ("/policy/groups/new", {"name": "ops", "members": "tag:web"}),
        (f"/nodes/{pid}/tags", {"tags": ["web"]}),
        (f"/nodes/{pid}/rename", {"name": "renamed"}),
        (f"/nodes/{pid}/revoke", {}),
        (f"/nodes/{pid}/delete", {}),
        ("/tokens/new", {"network": mesh["uk"].network_id, "uses": 1, "expires": "1h"}),
        (f"/tokens/{token.pk}/revoke", {}),
        ("/routes/new", {"via": mesh["uk"].pk, "prefix": "192.168.7.0/24"}),
        (f"/routes/{route.pk}/approve", {}),
        (f"/routes/{route.pk}/reject", {}),
        ("/apikeys/new", {"name": "ci", "expires": "30d"}),
        (f"/apikeys/{apikey.pk}/revoke", {}),
    ]


@pytest.fixture
def route(mesh):
    from meshadmin.mesh.services.routes import create_route

    return create_route(mesh["uk"], "192.168.50.0/24")


@pytest.fixture
def apikey(db):
    from meshadmin.mesh.services.apikeys import create_api_key

    return create_api_key("ci")[0]


@pytest.fixture
def rule(network, mesh):
    from meshadmin.mesh.services import policies

    tag = policies.create_tag(network, "web")
    made = policies.create_rule(network, sources="tag:web", destinations="node:uk", protocol="tcp",
                                ports="443")
    made.tag = tag
    return made


@pytest.fixture
def token(network):
    from meshadmin.mesh.services.tokens import create_token

    return create_token(network)[0]


def test_every_dashboard_page_sends_anonymous_visitors_to_login(mesh):
    client = Client()
    for path in read_pages(mesh):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith(reverse("dashboard:login")), path


def test_anonymous_writes_change_nothing(csrf_post, mesh, route, token, rule, apikey):
    client = Client()
    before = AuditEvent.objects.count()
    for path, data in write_requests(mesh, route, token, rule, apikey):
        response = csrf_post(client, path, data)
        assert response.status_code == 302 and "/login/" in response["Location"], path
    assert AuditEvent.objects.count() == before


def test_a_viewer_reads_every_page(viewer, mesh):
    for path in read_pages(mesh):
        assert viewer.get(path).status_code == 200, path


def test_a_viewer_gets_403_for_every_write_and_nothing_changes(csrf_post, viewer, mesh, route, token, rule,
                                                              apikey):
    before = AuditEvent.objects.count()
    tokens_before = EnrollmentToken.objects.count()
    for path, data in write_requests(mesh, route, token, rule, apikey):
        assert csrf_post(viewer, path, data).status_code == 403, path
    assert AuditEvent.objects.count() == before
    belgium = Node.objects.get(pk=mesh["belgium"].pk)
    assert (belgium.name, belgium.status) == ("belgium", NodeStatus.ACTIVE)
    assert Route.objects.get(pk=route.pk).approved is False
    assert EnrollmentToken.objects.get(pk=token.pk).revoked_at is None
    assert EnrollmentToken.objects.count() == tokens_before
    assert Network.objects.get().policy_default == "allow"
    assert [(r.pk, r.protocol) for r in AccessRule.objects.all()] == [(rule.pk, "tcp")]
    assert list(Tag.objects.values_list("name", flat=True)) == ["web"] and not Group.objects.exists()
    assert not belgium.tags.exists()
    assert ApiKey.objects.get().revoked_at is None and ApiKey.objects.count() == 1


def test_a_viewer_sees_no_admin_controls(viewer, mesh):
    page = viewer.get(f"/nodes/{mesh['belgium'].peer_id}/").content.decode()
    assert "Revoke…" not in page and 'name="name"' not in page
    assert "read-only" in page
    assert "New token" not in viewer.get("/tokens/").content.decode()
    policy = viewer.get("/policy/").content.decode()
    assert "/policy/rules/" not in policy and "Add rule" not in policy and "Save default" not in policy


def test_an_account_that_is_neither_staff_nor_viewer_gets_403_everywhere(
    csrf_post, outsider, mesh, route, token, rule, apikey
):
    for path in read_pages(mesh):
        assert outsider.get(path).status_code == 403, path
    for path, data in write_requests(mesh, route, token, rule, apikey):
        assert csrf_post(outsider, path, data).status_code == 403, path


def test_an_inactive_staff_account_cannot_use_the_dashboard(admin_user, mesh):
    client = Client()
    client.force_login(admin_user)
    admin_user.is_active = False
    admin_user.save()
    assert client.get("/nodes/").status_code in (302, 403)


def test_forms_refuse_a_post_without_the_csrf_token(admin, mesh, token):
    tokens_before = EnrollmentToken.objects.count()
    response = admin.post("/tokens/new", {"network": mesh["uk"].network_id, "uses": 1, "expires": "1h"})
    assert response.status_code == 403
    response = admin.post(f"/nodes/{mesh['belgium'].peer_id}/revoke")
    assert response.status_code == 403
    assert EnrollmentToken.objects.count() == tokens_before
    assert Node.objects.get(pk=mesh["belgium"].pk).status == NodeStatus.ACTIVE


def test_every_form_in_the_pages_carries_a_csrf_token(admin, mesh, route):
    pages = ["/", "/nodes/", f"/nodes/{mesh['uk'].peer_id}/", "/tokens/", "/tokens/new", "/routes/",
             "/policy/", f"/nodes/{mesh['uk'].peer_id}/revoke", "/apikeys/new"]
    for path in pages:
        html = admin.get(path).content.decode()
        posts = html.count('method="post"')
        assert posts > 0 or path == "/nodes/", path
        assert html.count('name="csrfmiddlewaretoken"') >= posts, path


def test_unknown_or_malformed_node_ids_are_404(admin, mesh):
    assert admin.get("/nodes/" + "0" * 40 + "/").status_code == 404
    assert admin.get("/nodes/not-a-peer-id/").status_code == 404
