"""Dashboard: the DNS suffix form, a node's DNS name, the exit-node buttons and the exit node a node
uses; every form goes through the services (audited), viewers may look but not post."""

from __future__ import annotations

import pytest

from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node, Route

pytestmark = pytest.mark.django_db


def test_the_overview_shows_and_sets_the_dns_suffix(admin, mesh, csrf_post):
    net = Network.objects.get(name="default")
    page = admin.get("/").content.decode()
    assert "NAME.default.mesh" in page
    response = csrf_post(admin, f"/networks/{net.pk}/dns", {"suffix": "corp.example"})
    assert response.status_code == 302
    assert Network.objects.get(pk=net.pk).dns_suffix == "corp.example"
    assert AuditEvent.objects.filter(action=AuditAction.NETWORK_DNS_CHANGED, actor="user:alice").exists()
    csrf_post(admin, f"/networks/{net.pk}/dns", {"suffix": "not a suffix"})
    assert Network.objects.get(pk=net.pk).dns_suffix == "corp.example"
    node = mesh["belgium"]
    page = admin.get(f"/nodes/{node.peer_id}/").content.decode()
    assert "belgium.corp.example" in page
    xss = mesh["xss"]
    assert "not a DNS label" in admin.get(f"/nodes/{xss.peer_id}/").content.decode()


def test_exit_node_buttons_and_the_choice_of_exit_node(admin, mesh, csrf_post):
    uk, belgium = mesh["uk"], mesh["belgium"]
    assert "Offer as exit node" in admin.get(f"/nodes/{uk.peer_id}/").content.decode()
    csrf_post(admin, f"/nodes/{uk.peer_id}/exit", {"action": "advertise"})
    assert set(Route.objects.filter(via=uk).values_list("approved", flat=True)) == {False}
    assert "Approve as exit node" in admin.get(f"/nodes/{uk.peer_id}/").content.decode()
    page = admin.get(f"/nodes/{belgium.peer_id}/").content.decode()
    assert "uk (not approved yet)" in page
    csrf_post(admin, f"/nodes/{uk.peer_id}/exit", {"action": "approve"})
    assert set(Route.objects.filter(via=uk).values_list("approved", flat=True)) == {True}
    csrf_post(admin, f"/nodes/{belgium.peer_id}/use-exit", {"exit_node": uk.peer_id})
    assert Node.objects.get(pk=belgium.pk).use_exit_id == uk.pk
    assert "Through" in admin.get(f"/nodes/{belgium.peer_id}/").content.decode()
    response = csrf_post(admin, f"/nodes/{belgium.peer_id}/use-exit", {"exit_node": "0" * 40})
    assert response.status_code == 302 and Node.objects.get(pk=belgium.pk).use_exit_id == uk.pk
    csrf_post(admin, f"/nodes/{uk.peer_id}/exit", {"action": "bogus"})
    csrf_post(admin, f"/nodes/{uk.peer_id}/exit", {"action": "remove"})
    assert not Route.objects.filter(via=uk).exists()
    kinds = list(AuditEvent.objects.filter(actor="user:alice").values_list("action", flat=True))
    assert {"exit.advertised", "exit.approved", "exit.selected", "exit.removed"} <= set(kinds)


def test_viewers_cannot_change_exit_nodes_or_the_suffix(viewer, mesh, csrf_post):
    uk = mesh["uk"]
    assert csrf_post(viewer, f"/nodes/{uk.peer_id}/exit", {"action": "advertise"}).status_code == 403
    assert csrf_post(viewer, f"/nodes/{uk.peer_id}/use-exit", {"exit_node": ""}).status_code == 403
    net = Network.objects.get(name="default")
    assert csrf_post(viewer, f"/networks/{net.pk}/dns", {"suffix": "x.example"}).status_code == 403
    assert not Route.objects.exists() and Network.objects.get(pk=net.pk).dns_suffix == ""
