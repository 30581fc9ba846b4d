"""The node table searches and sorts; the audit log filters by node, actor, type and time."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent

pytestmark = pytest.mark.django_db


def names_in_table(html: str) -> list[str]:
    return re.findall(r'class="node-name">([^<]*)</a>', html)


def test_the_node_table_searches_by_name_peer_id_and_overlay_ip(admin, mesh):
    assert names_in_table(admin.get("/nodes/?q=belg").content.decode()) == ["belgium"]
    prefix = mesh["uk"].peer_id[:10]
    assert names_in_table(admin.get(f"/nodes/?q={prefix}").content.decode()) == ["uk"]
    ip = mesh["belgium"].overlay_ip
    assert "belgium" in names_in_table(admin.get(f"/nodes/?q={ip}").content.decode())
    html = admin.get("/nodes/?q=nothing-like-this").content.decode()
    assert names_in_table(html) == [] and "No node matches" in html


def test_the_node_table_shows_the_version_each_agent_reported(admin, mesh):
    from meshadmin.mesh.models import Node

    Node.objects.filter(peer_id=mesh["uk"].peer_id).update(agent_version="0.9.1")
    html = admin.get("/nodes/").content.decode()
    row = html[html.index(">uk</a>"):]
    assert "0.9.1" in row[: row.index("</tr>")]


def test_the_node_table_sorts_by_each_column_both_ways(admin, mesh, csrf_post):
    csrf_post(admin, f"/nodes/{mesh['belgium'].peer_id}/revoke")
    by_name = names_in_table(admin.get("/nodes/?sort=name").content.decode())
    assert by_name == sorted(by_name, key=str.lower) and len(by_name) == 3
    assert names_in_table(admin.get("/nodes/?sort=name&dir=desc").content.decode()) == by_name[::-1]
    by_ip = names_in_table(admin.get("/nodes/?sort=overlay_ip").content.decode())
    assert by_ip[-1] == "belgium", "a revoked node has no overlay IP and sorts last"
    by_state = names_in_table(admin.get("/nodes/?sort=online").content.decode())
    assert by_state[-1] == "belgium", "offline before revoked"
    html = admin.get("/nodes/?sort=name&dir=asc").content.decode()
    assert 'data-dir="asc"' in html and "dir=desc" in html, "the active column header flips the order"


def test_the_node_table_filters_by_status(admin, mesh, csrf_post):
    csrf_post(admin, f"/nodes/{mesh['belgium'].peer_id}/revoke")
    assert names_in_table(admin.get("/nodes/?status=revoked").content.decode()) == ["belgium"]
    assert "belgium" not in names_in_table(admin.get("/nodes/?status=offline").content.decode())


def test_bad_filter_values_fall_back_to_the_plain_table(admin, mesh):
    html = admin.get("/nodes/?sort=password&dir=sideways&status=evil").content.decode()
    assert len(names_in_table(html)) == 3


def _audit_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-action="([^"]+)">', html)


def test_the_audit_log_filters_by_type_node_actor_and_time(admin, mesh, csrf_post):
    csrf_post(admin, f"/nodes/{mesh['belgium'].peer_id}/rename", {"name": "brussels"})
    by_type = _audit_rows(admin.get("/audit/?action=node.renamed").content.decode())
    assert by_type == ["node.renamed"]

    node_events = set(_audit_rows(admin.get("/audit/?node=brussels").content.decode()))
    assert {"node.enrolled", "node.renamed"} <= node_events
    assert "network.created" not in node_events
    by_prefix = set(_audit_rows(admin.get(f"/audit/?node={mesh['belgium'].peer_id[:8]}").content.decode()))
    assert by_prefix == node_events

    assert _audit_rows(admin.get("/audit/?actor=alice").content.decode()) == ["node.renamed"]
    by_node_actor = set(_audit_rows(admin.get("/audit/?actor=brussels").content.decode()))
    assert by_node_actor == {"node.enrolled"}, "a node's name finds what the node itself did"

    soon = (timezone.now() + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    assert _audit_rows(admin.get(f"/audit/?since={soon}").content.decode()) == []
    everything = _audit_rows(admin.get(f"/audit/?until={soon}").content.decode())
    assert len(everything) == AuditEvent.objects.count()


def test_audit_rows_name_nodes_instead_of_peer_ids(admin, mesh):
    html = admin.get("/audit/?action=node.enrolled").content.decode()
    assert "node uk" in html and "node belgium" in html


def test_failed_dashboard_logins_are_audited_without_the_password(client, admin_user):
    response = client.post("/login/", {"username": "alice", "password": "not-the-password"})
    assert response.status_code == 200 and "Sign in" in response.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.AUTH_FAILED)
    assert event.actor == "user:alice" and event.source_ip == "127.0.0.1"
    assert "not-the-password" not in str(event.details)


@pytest.fixture
def one_failure_window(monkeypatch):
    """The sign-in failures of a test all fall in one counting window: the window is 15 minutes of
    the wall clock, and a test that ran across the end of one saw its failures forgotten."""
    from meshadmin.dashboard import views

    monkeypatch.setattr(views, "clock", lambda: 1_800_000_000.0)


def test_repeated_failed_logins_are_refused_for_a_while_even_with_the_right_password(
    client, admin_user, settings, one_failure_window
):
    settings.SHADOWMESH_LOGIN_FAILURE_LIMIT = 3
    admin_user.set_password("a long password for this test")
    admin_user.save()
    for _ in range(3):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    audited = AuditEvent.objects.filter(action=AuditAction.AUTH_FAILED).count()
    response = client.post("/login/", {"username": "alice", "password": "a long password for this test"})
    assert response.status_code == 429 and "Too many failed sign-ins" in response.content.decode()
    assert client.get("/nodes/").status_code == 302, "still signed out"
    assert AuditEvent.objects.filter(action=AuditAction.AUTH_FAILED).count() == audited, "password not tried"
    other = Client(REMOTE_ADDR="10.9.9.9")
    response = other.post("/login/", {"username": "ALICE ", "password": "a long password for this test"})
    assert response.status_code == 429, "the name is limited too, whatever address guesses it"


def test_logging_in_lands_on_the_overview_and_logging_out_ends_the_session(client, admin_user):
    admin_user.set_password("a long password for this test")
    admin_user.save()
    credentials = {"username": "alice", "password": "a long password for this test", "next": "/nodes/"}
    response = client.post("/login/?next=/nodes/", credentials)
    assert response.status_code == 302 and response["Location"] == "/nodes/"
    assert client.get("/nodes/").status_code == 200
    assert client.get("/logout/").status_code == 405, "logging out takes a POST (CSRF-protected form)"
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get("/nodes/").status_code == 302


def test_login_refuses_to_redirect_off_site(client, admin_user):
    admin_user.set_password("a long password for this test")
    admin_user.save()
    response = client.post("/login/", {"username": "alice", "password": "a long password for this test",
                                       "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_audit_rows_name_the_object_and_link_to_the_node(admin, mesh, network):
    from meshadmin.mesh.services.tokens import create_token

    token, _ = create_token(network)
    html = admin.get("/audit/").content.decode()
    assert f'<a href="/nodes/{mesh["uk"].peer_id}/">node uk</a>' in html
    assert f"token {token.prefix}…" in html


def test_the_admin_sign_in_page_shares_the_failure_limit(client, admin_user, settings, one_failure_window):
    """/admin/login/ was a second door with no limit at all (attack 25)."""
    settings.SHADOWMESH_LOGIN_FAILURE_LIMIT = 3
    admin_user.set_password("a long password for this test")
    admin_user.save()
    assert client.get("/admin/login/").status_code == 200
    for _ in range(2):
        assert client.post("/admin/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    for path in ("/admin/login/", "/login/"):
        response = client.post(path, {"username": "alice", "password": "a long password for this test"})
        assert response.status_code == 429, path
    assert client.get("/admin/").status_code == 302, "still signed out"
    # another address and another name are not limited by these failures
    other = Client(REMOTE_ADDR="10.9.9.9")
    response = other.post("/admin/login/", {"username": "bob", "password": "wrong"})
    assert response.status_code == 200


def test_a_folded_audit_event_shows_how_many_attempts_it_stands_for(admin):
    from meshadmin.mesh.services.audit import record_refusal

    for _ in range(5):
        record_refusal(AuditAction.AUTH_FAILED, reason="bad signature", channel="websocket",
                       source_ip="198.18.7.7")
    html = admin.get("/audit/?action=auth.failed").content.decode()
    assert html.count('data-testid="audit-count"') == 1 and "\u00d75" in html  # the multiplication sign, 5
