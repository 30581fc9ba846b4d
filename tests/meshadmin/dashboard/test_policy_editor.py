"""The access-policy editor in the dashboard: rules listed, added, edited, reordered and deleted,
refusals shown next to the field they concern, the default, tags (on the policy page, on a node's
page, on tokens), groups, the reachability view and what the policy refused. Every change goes
through a service: audited as the signed-in user and announced to the agents."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from meshadmin.mesh.changes import ALL_NODES, change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AccessRule, AuditEvent, EnrollmentToken, Network, Node
from meshadmin.mesh.services import exits, policies
from meshadmin.telemetry.models import Sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    received = []

    def receiver(sender, change, **kwargs):
        received.append(change)

    change_announced.connect(receiver)
    yield received
    change_announced.disconnect(receiver)


def field_errors(html: str, field: str) -> str:
    """The text of the error list inside the form field `field` ('' when there is none)."""
    m = re.search(rf'<div class="field" data-field="{field}">(.*?)(?=data-field=|</form>)', html, re.S)
    assert m, f"no field {field} on the page"
    errors = re.search(r'<ul class="errors"[^>]*>(.*?)</ul>', m.group(1), re.S)
    return re.sub(r"<[^>]+>", "", errors.group(1)) if errors else ""


def rule_rows(html: str) -> list[str]:
    """The rules table as 'position: from -> to proto ports' lines."""
    rows = []
    for pos, cells in re.findall(r'<tr data-rule="(\d+)">(.*?)</tr>', html, re.S):
        tds = [re.sub(r"<[^>]+>", "", td).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", cells, re.S)]
        rows.append(f"{pos}: {tds[1]} -> {tds[2]} {tds[3]} {tds[4]}")
    return rows


def test_a_rule_added_in_the_editor_is_listed_audited_and_pushed(
    admin, mesh, csrf_post, heard, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = csrf_post(
            admin,
            "/policy/rules/new",
            {
                "network": "default",
                "sources": "node:belgium",
                "destinations": "node:uk",
                "protocol": "tcp",
                "ports": "22, 8000-8080",
                "description": "ssh and the app",
            },
        )
    assert response.status_code == 302
    assert [(c.reason, c.node_ids) for c in heard] == [("rule.created", ALL_NODES)]
    event = AuditEvent.objects.filter(action=AuditAction.RULE_CREATED).get()
    assert event.actor == "user:alice"
    page = admin.get(response["Location"]).content.decode()
    assert rule_rows(page) == ["1: node:belgium -> node:uk tcp 22, 8000-8080"]
    assert "Rule 1 added" in page


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"sources": "tag:nobody"}, "sources", "no tag named &#x27;nobody&#x27;"),
        ({"destinations": "node:atlantis"}, "destinations", "no active node named &#x27;atlantis&#x27;"),
        ({"ports": "22, http"}, "ports", "&#x27;http&#x27; is not a port"),
        ({"protocol": "icmp", "ports": "22"}, "ports", "only tcp and udp rules name ports"),
        ({"protocol": "gre"}, "protocol", "Select a valid choice"),
        ({"sources": ""}, "sources", "This field is required"),
    ],
)
def test_a_refused_rule_shows_the_error_next_to_its_field_and_keeps_the_input(
    admin, mesh, csrf_post, data, field, says
):
    good = {"network": "default", "sources": "*", "destinations": "node:uk", "protocol": "tcp", "ports": "22"}
    response = csrf_post(admin, "/policy/rules/new", {**good, **data})
    assert response.status_code == 400
    html = response.content.decode()
    assert says in field_errors(html, field)
    others = [f for f in ("sources", "destinations", "protocol", "ports") if f != field]
    assert all(field_errors(html, f) == "" for f in others)
    if data.get(field):
        assert f'value="{data[field]}"' in html or data[field] in html  # what was typed is still there
    assert not AccessRule.objects.exists() and not AuditEvent.objects.filter(action=AuditAction.RULE_CREATED)


def test_rules_are_edited_reordered_and_deleted(admin, mesh, network, csrf_post):
    for port in (22, 80, 443):
        policies.create_rule(
            network, sources="node:belgium", destinations="node:uk", protocol="tcp", ports=str(port)
        )
    first, second, third = AccessRule.objects.order_by("position")
    edit_page = admin.get(f"/policy/rules/{first.pk}/").content.decode()
    assert 'value="node:belgium"' in edit_page and 'value="node:uk"' in edit_page  # names, not peer ids
    response = csrf_post(
        admin,
        f"/policy/rules/{first.pk}/",
        {"sources": "*", "destinations": "node:uk", "protocol": "udp", "ports": "53", "position": "3"},
    )
    assert response.status_code == 302
    assert rule_rows(admin.get("/policy/").content.decode()) == [
        "1: node:belgium -> node:uk tcp 80",
        "2: node:belgium -> node:uk tcp 443",
        "3: * -> node:uk udp 53",
    ]
    assert csrf_post(admin, f"/policy/rules/{third.pk}/move", {"position": "1"}).status_code == 302
    assert csrf_post(admin, f"/policy/rules/{second.pk}/delete", {}).status_code == 302
    assert rule_rows(admin.get("/policy/").content.decode()) == [
        "1: node:belgium -> node:uk tcp 443",
        "2: * -> node:uk udp 53",
    ]
    actions = list(
        AuditEvent.objects.filter(actor="user:alice").order_by("pk").values_list("action", flat=True)
    )
    assert actions == [
        AuditAction.RULE_UPDATED,
        AuditAction.RULE_MOVED,
        AuditAction.RULE_MOVED,
        AuditAction.RULE_DELETED,
    ]
    bad = csrf_post(
        admin,
        f"/policy/rules/{first.pk}/",
        {"sources": "*", "destinations": "tag:ghost", "protocol": "udp", "ports": "53"},
    )
    assert bad.status_code == 400
    assert "no tag named" in field_errors(bad.content.decode(), "destinations")


def test_the_default_is_set_in_the_editor(admin, mesh, csrf_post, heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            csrf_post(admin, "/policy/default", {"network": "default", "default": "deny"}).status_code == 302
        )
    assert Network.objects.get().policy_default == "deny"
    assert [c.reason for c in heard] == ["policy.default"]
    bad = csrf_post(admin, "/policy/default", {"network": "default", "default": "maybe"})
    assert bad.status_code == 400 and "Select a valid choice" in field_errors(bad.content.decode(), "default")
    assert Network.objects.get().policy_default == "deny"


def test_tags_are_created_put_on_nodes_and_given_by_tokens(admin, mesh, network, csrf_post):
    bad = csrf_post(admin, "/policy/tags/new", {"network": "default", "name": "Web Server"})
    assert bad.status_code == 400 and "is not a name" in field_errors(bad.content.decode(), "name")
    assert csrf_post(admin, "/policy/tags/new", {"network": "default", "name": "web"}).status_code == 302
    again = csrf_post(admin, "/policy/tags/new", {"network": "default", "name": "web"})
    assert again.status_code == 400 and "already exists" in field_errors(again.content.decode(), "name")

    belgium = mesh["belgium"]
    node_page = admin.get(f"/nodes/{belgium.peer_id}/").content.decode()
    assert 'name="tags" value="web"' in node_page
    assert csrf_post(admin, f"/nodes/{belgium.peer_id}/tags", {"tags": ["web"]}).status_code == 302
    assert list(Node.objects.get(pk=belgium.pk).tags.values_list("name", flat=True)) == ["web"]
    shown = admin.get(f"/nodes/{belgium.peer_id}/").content.decode()
    assert re.search(r'data-testid="node-tags">.*tag:web', shown)
    assert csrf_post(admin, f"/nodes/{belgium.peer_id}/tags", {"tags": ["nope"]}).status_code == 302
    assert list(Node.objects.get(pk=belgium.pk).tags.values_list("name", flat=True)) == ["web"]
    event = AuditEvent.objects.filter(action=AuditAction.NODE_TAGGED).get()
    assert (event.actor, event.details["new"]) == ("user:alice", ["web"])

    tokens = EnrollmentToken.objects.count()
    refused = csrf_post(
        admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "1h", "tags": "db"}
    )
    assert refused.status_code == 400 and "no tag named" in field_errors(refused.content.decode(), "tags")
    made = csrf_post(admin, "/tokens/new", {"network": network.pk, "uses": 1, "expires": "1h", "tags": "web"})
    assert made.status_code == 200
    assert EnrollmentToken.objects.count() == tokens + 1  # the refused one was not made
    newest = EnrollmentToken.objects.order_by("-pk").first()
    assert list(newest.tags.values_list("name", flat=True)) == ["web"]


def test_groups_are_created_edited_and_refused_naming_the_field(admin, mesh, network, csrf_post):
    policies.create_tag(network, "web")
    bad = csrf_post(admin, "/policy/groups/new", {"network": "default", "name": "ops", "members": "group:x"})
    assert bad.status_code == 400 and "not groups" in field_errors(bad.content.decode(), "members")
    assert (
        csrf_post(
            admin, "/policy/groups/new", {"network": "default", "name": "ops", "members": "tag:web, node:uk"}
        ).status_code
        == 302
    )
    group = network.groups.get()
    assert group.members == ["tag:web", "node:" + mesh["uk"].peer_id]
    assert 'value="tag:web, node:uk"' in admin.get(f"/policy/groups/{group.pk}/").content.decode()
    assert (
        csrf_post(
            admin, f"/policy/groups/{group.pk}/", {"name": "ops", "members": "node:belgium"}
        ).status_code
        == 302
    )
    group.refresh_from_db()
    assert group.members == ["node:" + mesh["belgium"].peer_id]
    page = admin.get("/policy/").content.decode()
    assert re.search(r'data-group="ops">.*?node:belgium', page, re.S)


def test_the_reach_view_says_who_can_reach_a_node_and_what_it_can_reach(admin, mesh, network):
    uk, belgium = mesh["uk"], mesh["belgium"]
    policies.set_policy_default(network, "deny")
    policies.create_rule(network, sources="node:belgium", destinations="node:uk", protocol="tcp", ports="22")
    page = admin.get(f"/nodes/{uk.peer_id}/reach").content.decode()
    reached_by = re.search(r'data-testid="reached-by">(.*?)</table>', page, re.S).group(1)
    assert re.search(rf'data-peer-id="{belgium.peer_id}">.*?tcp 22', reached_by, re.S)
    assert "uk filters what it receives" in page
    page = admin.get(f"/nodes/{belgium.peer_id}/reach").content.decode()
    reaches = re.search(r'data-testid="reaches">(.*?)</table>', page, re.S).group(1)
    assert re.search(rf'data-peer-id="{uk.peer_id}">.*?tcp 22', reaches, re.S)


def test_the_reach_view_shows_what_a_node_may_send_to_the_internet_under_a_plain_title(admin, mesh, network):
    uk, belgium = mesh["uk"], mesh["belgium"]
    page = admin.get(f"/nodes/{belgium.peer_id}/reach").content.decode()
    assert re.search(r"<title>Reachability of belgium · ShadowMesh</title>", page)
    assert 'data-testid="internet-reach"' not in page  # no exit node in the network
    exits.advertise_exit_node(uk, approved=True)
    policies.create_rule(network, sources="node:uk", destinations="internet", protocol="udp", ports="53")
    page = admin.get(f"/nodes/{belgium.peer_id}/reach").content.decode()
    panel = re.search(r'data-testid="internet-reach">(.*?)</section>', page, re.S).group(1)
    assert "may not use an exit node" in panel
    policies.create_rule(network, sources="node:belgium", destinations="internet", protocol="tcp",
                         ports="443")
    page = admin.get(f"/nodes/{belgium.peer_id}/reach").content.decode()
    panel = re.search(r'data-testid="internet-reach">(.*?)</section>', page, re.S).group(1)
    assert "belgium may send tcp 443." in panel


def test_what_the_policy_refused_shows_on_the_policy_page_and_the_node_page(admin, mesh, network):
    uk, belgium = mesh["uk"], mesh["belgium"]
    now = timezone.now()
    for ago, denied in ((30, 7), (10, 5)):
        Sample.objects.create(
            network=network,
            node=uk,
            peer_id=belgium.peer_id,
            ts=now - timedelta(seconds=ago),
            interval_s=2,
            path="direct",
            denied_frames=denied,
        )
    Sample.objects.create(
        network=network,
        node=uk,
        peer_id=belgium.peer_id,
        ts=now - timedelta(hours=2),
        interval_s=2,
        path="direct",
        denied_frames=1000,
    )  # older than the hour shown
    page = admin.get("/policy/").content.decode()
    row = re.search(
        rf'data-testid="policy-drops">.*?data-peer-id="{uk.peer_id}">(.*?)</tr>', page, re.S
    ).group(1)
    assert ">12<" in row and "belgium (12)" in row
    node_page = admin.get(f"/nodes/{uk.peer_id}/").content.decode()
    denied = re.search(r'data-testid="policy-denied">(.*?)</dd>', node_page, re.S).group(1)
    assert "12 frames in the last hour" in denied and "belgium</a> (12)" in denied
    quiet = admin.get(f"/nodes/{belgium.peer_id}/").content.decode()
    assert "nothing in the last hour" in quiet


def test_a_fresh_install_without_a_network_shows_how_to_start(admin, db):
    page = admin.get("/policy/")
    assert page.status_code == 200 and "No network yet" in page.content.decode()
