"""The access policy through the operator API (meshadmin/api/operator_policy.py): tags, a node's
tags, groups, rules and their order, the default, reachability; each write the policy service's
(audited as the key, announced), read-only keys 403, bad values 400 naming the field."""

from __future__ import annotations

import pytest

from meshadmin.mesh.changes import change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AccessRule, AuditEvent, Group, Network, Node, Tag
from meshadmin.mesh.services.apikeys import create_api_key
from tests.meshadmin.api.operator_client import OperatorClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    received = []

    def receiver(sender, change, **kwargs):
        received.append(change)

    change_announced.connect(receiver)
    yield received
    change_announced.disconnect(receiver)


@pytest.fixture
def rw_key(db):
    return create_api_key("ops")


@pytest.fixture
def op(rw_key):
    return OperatorClient(rw_key[1])


def _actions(key_pair) -> list[str]:
    rows = AuditEvent.objects.filter(actor=f"apikey:{key_pair[0].prefix}").order_by("id")
    return list(rows.values_list("action", flat=True))


def test_tags_are_made_given_to_nodes_listed_and_deleted(op, rw_key, uk, belgium, heard,
                                                         django_capture_on_commit_callbacks):
    be = belgium[0].peer_id
    response = op.post("/api/tags", {"name": "web", "description": "front ends"})
    assert response.status_code == 201
    tag = response.json()
    assert (tag["network"], tag["name"], tag["nodes"]) == ("default", "web", [])
    assert op.post("/api/tags", {"name": "web"}).status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        response = op.put(f"/api/nodes/{be}/tags", {"tags": ["web"]})
    assert response.status_code == 200 and response.json() == ["web"]
    assert [c.reason for c in heard] == ["node.tagged"]
    assert op.get("/api/tags").json()[0]["nodes"] == [be]
    assert op.get("/api/tags?network=default").json()[0]["id"] == tag["id"]
    assert op.delete(f"/api/tags/{tag['id']}").status_code == 204
    assert op.delete(f"/api/tags/{tag['id']}").status_code == 404
    assert not Tag.objects.exists() and not Node.objects.get(peer_id=be).tags.exists()
    assert _actions(rw_key) == [AuditAction.TAG_CREATED, AuditAction.NODE_TAGGED, AuditAction.TAG_DELETED]


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Web"}, "name"), ({"name": ""}, "name"), ({"name": "a" * 64}, "name"),
    ({"name": "ok", "description": "x" * 201}, "description"), ({"name": "ok", "colour": "red"}, "colour"),
])
def test_bad_tags_are_a_400_naming_the_field(op, network, body, field):
    response = op.post("/api/tags", body)
    assert response.status_code == 400 and response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not Tag.objects.exists()


def test_unknown_networks_tags_and_nodes(op, network, belgium):
    assert op.post("/api/tags", {"network": "nowhere", "name": "x"}).status_code == 404
    assert op.get("/api/tags?network=nowhere").status_code == 404
    response = op.put(f"/api/nodes/{belgium[0].peer_id}/tags", {"tags": ["ghost"]})
    assert response.status_code == 409 and response.json()["detail"].startswith("tags: no tag named 'ghost'")
    assert op.put("/api/nodes/" + "0" * 40 + "/tags", {"tags": []}).status_code == 404


def test_rules_are_added_edited_moved_and_deleted(op, rw_key, uk, belgium, heard,
                                                  django_capture_on_commit_callbacks):
    op.post("/api/tags", {"name": "web"})
    with django_capture_on_commit_callbacks(execute=True):
        first = op.post("/api/rules", {"sources": ["tag:web"], "destinations": ["node:uk"],
                                       "protocol": "tcp", "ports": "443, 8000-8080"})
    assert first.status_code == 201
    rule = first.json()
    assert rule["destinations"] == [f"node:{uk[0].peer_id}"] and rule["ports"] == "443, 8000-8080"
    assert rule["position"] == 1
    second = op.post("/api/rules", {"sources": ["*"], "destinations": ["node:belgium"], "protocol": "icmp",
                                    "position": 1}).json()
    assert [r["id"] for r in op.get("/api/rules").json()] == [second["id"], rule["id"]]
    edited = op.patch(f"/api/rules/{rule['id']}", {"ports": "22"})
    assert edited.status_code == 200 and edited.json()["ports"] == "22" and edited.json()["protocol"] == "tcp"
    moved = op.post(f"/api/rules/{rule['id']}/move", {"position": 1})
    assert [r["id"] for r in moved.json()] == [rule["id"], second["id"]]
    assert op.delete(f"/api/rules/{second['id']}").status_code == 204
    assert [r["position"] for r in op.get("/api/rules").json()] == [1]
    assert "rule.created" in [c.reason for c in heard]
    assert _actions(rw_key) == [AuditAction.TAG_CREATED, AuditAction.RULE_CREATED, AuditAction.RULE_CREATED,
                                AuditAction.RULE_UPDATED, AuditAction.RULE_MOVED, AuditAction.RULE_DELETED]


@pytest.mark.parametrize(("body", "field"), [
    ({"sources": ["*"], "destinations": ["*"], "protocol": "icmp", "ports": "22"}, "ports"),
    ({"sources": ["*"], "destinations": ["*"], "protocol": "tcp", "ports": "99999"}, "ports"),
    ({"sources": ["*"], "destinations": ["*"], "protocol": "gre"}, "protocol"),
    ({"sources": [], "destinations": ["*"]}, "sources"),
    ({"sources": "*", "destinations": ["*"]}, "sources"),
    ({"sources": ["everyone"], "destinations": ["*"]}, "sources.0"),
    ({"sources": ["*"], "destinations": ["*"], "position": 0}, "position"),
])
def test_bad_rules_are_a_400_naming_the_field_and_change_nothing(op, uk, body, field):
    serial = Network.objects.get().serial
    response = op.post("/api/rules", body)
    assert response.status_code == 400, response.json()
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not AccessRule.objects.exists() and Network.objects.get().serial == serial


@pytest.mark.parametrize(("body", "field"), [
    ({"sources": ["tag:ghost"], "destinations": ["*"]}, "sources"),
    ({"sources": ["*"], "destinations": ["node:nobody"]}, "destinations"),
    ({"sources": ["group:nobody"], "destinations": ["*"]}, "sources"),
])
def test_selectors_that_name_nothing_are_409_naming_the_field(op, uk, body, field):
    response = op.post("/api/rules", body)
    assert response.status_code == 409, response.json()
    assert response.json()["detail"].startswith(f"{field}: no "), response.json()
    assert not AccessRule.objects.exists()


def test_groups_and_their_use_by_rules(op, uk, belgium):
    op.post("/api/tags", {"name": "web"})
    made = op.post("/api/groups", {"name": "ops", "members": ["tag:web", "node:belgium"]})
    assert made.status_code == 201
    group = made.json()
    assert group["members"] == ["tag:web", f"node:{belgium[0].peer_id}"]
    patched = op.patch(f"/api/groups/{group['id']}", {"members": ["node:uk"], "description": "on call"})
    assert patched.json()["members"] == [f"node:{uk[0].peer_id}"]
    assert patched.json()["description"] == "on call"
    rule = op.post("/api/rules", {"sources": ["group:ops"], "destinations": ["*"]}).json()
    response = op.delete(f"/api/groups/{group['id']}")
    assert response.status_code == 409 and "rule 1" in response.json()["detail"]
    op.delete(f"/api/rules/{rule['id']}")
    assert op.delete(f"/api/groups/{group['id']}").status_code == 204
    assert not Group.objects.exists()
    response = op.post("/api/groups", {"name": "nested", "members": ["group:ops"]})
    assert response.status_code == 400 and response.json()["detail"].startswith("members.0:")


def test_the_default_and_reachability(op, rw_key, uk, belgium, heard, django_capture_on_commit_callbacks):
    be = belgium[0].peer_id
    reach = op.get(f"/api/nodes/{be}/reach").json()
    assert reach["isolated"] is False and [r["name"] for r in reach["reached_by"]] == ["uk"]
    with django_capture_on_commit_callbacks(execute=True):
        response = op.put("/api/networks/default/policy-default", {"default": "deny"})
    assert response.status_code == 200 and response.json() == {"default": "deny"}
    assert [c.reason for c in heard] == ["policy.default"]
    reach = op.get(f"/api/nodes/{be}/reach").json()
    assert reach["isolated"] is True and reach["reached_by"] == []
    op.post("/api/rules", {"sources": ["node:uk"], "destinations": [f"node:{be}"], "protocol": "tcp",
                           "ports": "22"})
    allowed = op.get(f"/api/nodes/{be}/reach").json()["reached_by"]
    assert allowed == [{"peer_id": uk[0].peer_id, "name": "uk", "everything": False,
                        "allowed": [{"protocol": "tcp", "ports": "22"}]}]
    assert op.put("/api/networks/default/policy-default", {"default": "maybe"}).status_code == 400
    assert op.put("/api/networks/nowhere/policy-default", {"default": "deny"}).status_code == 404
    assert AuditAction.POLICY_DEFAULT_CHANGED in _actions(rw_key)


def test_internet_is_a_destination_and_the_reach_says_what_goes_there(op, uk, belgium):
    be = belgium[0].peer_id
    assert op.get(f"/api/nodes/{be}/reach").json()["internet"] is None  # no exit node yet
    response = op.post("/api/rules", {"sources": ["internet"], "destinations": ["node:uk"]})
    assert response.status_code == 400 and response.json()["detail"].startswith("sources.0:")
    response = op.post("/api/rules", {"sources": [f"node:{be}"], "destinations": ["internet"],
                                      "protocol": "tcp", "ports": "443"})
    assert response.status_code == 201, response.content
    assert response.json()["destinations"] == ["internet"]
    assert op.post(f"/api/nodes/{uk[0].peer_id}/exit-node", {"approved": True}).status_code == 200
    assert op.get(f"/api/nodes/{be}/reach").json()["internet"] == {
        "everything": False, "allowed": [{"protocol": "tcp", "ports": "443"}]}
    assert AccessRule.objects.count() == 1


def test_a_read_only_key_reads_the_policy_and_changes_none_of_it(uk, belgium):
    from meshadmin.mesh.services import policies

    network = Network.objects.get()
    tag = policies.create_tag(network, "web")
    rule = policies.create_rule(network, sources="*", destinations="tag:web")
    group = policies.create_group(network, "ops")
    ro = OperatorClient(create_api_key("ro", read_only=True)[1])
    for path in ("/api/tags", "/api/groups", "/api/rules", f"/api/nodes/{uk[0].peer_id}/reach"):
        assert ro.get(path).status_code == 200, path
    writes = [
        ro.post("/api/tags", {"name": "db"}), ro.delete(f"/api/tags/{tag.pk}"),
        ro.put(f"/api/nodes/{uk[0].peer_id}/tags", {"tags": ["web"]}),
        ro.post("/api/groups", {"name": "x"}), ro.patch(f"/api/groups/{group.pk}", {"members": []}),
        ro.delete(f"/api/groups/{group.pk}"),
        ro.post("/api/rules", {"sources": ["*"], "destinations": ["*"]}),
        ro.patch(f"/api/rules/{rule.pk}", {"ports": ""}),
        ro.post(f"/api/rules/{rule.pk}/move", {"position": 1}),
        ro.delete(f"/api/rules/{rule.pk}"),
        ro.put("/api/networks/default/policy-default", {"default": "deny"}),
    ]
    assert [w.status_code for w in writes] == [403] * len(writes)
    assert Network.objects.get().policy_default == "allow" and AccessRule.objects.count() == 1
