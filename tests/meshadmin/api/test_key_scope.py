"""A key made for one network sees and changes that network only (meshadmin/api/scope.py).

Every operator operation of the schema is called with a read-write key of network "other" on
what belongs to network "default": each answers 404 (or lists none of it) and changes nothing.
The table below must name every operator operation, so one added later without a scope check
fails here. The same calls with a key of "default" reach the objects (the control)."""

from __future__ import annotations

import pytest
from django.core import serializers

from meshadmin.mesh.models import AccessRule, EnrollmentToken, Group, Network, Node, Route, Tag
from meshadmin.mesh.services import policies
from meshadmin.mesh.services.apikeys import create_api_key
from meshadmin.mesh.services.exits import advertise_exit_node
from meshadmin.mesh.services.networks import create_network
from meshadmin.mesh.services.routes import create_route
from meshadmin.mesh.services.tokens import create_token
from tests.meshadmin.api.operator_client import OperatorClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(network, uk, belgium):
    """Network "default" with two nodes, a token, a route, an exit node, a tag, a group and a rule;
    network "other" with a token of its own."""
    uk_node = Node.objects.get(name="uk")
    be_node = Node.objects.get(name="belgium")
    token = create_token(network, uses=1)[0]
    route = create_route(be_node, "192.168.7.0/24", approved=False)
    advertise_exit_node(uk_node, approved=False)
    tag = policies.create_tag(network, "web")
    group = policies.create_group(network, "ops", "node:uk")
    rule = policies.create_rule(network, sources="*", destinations="tag:web")
    other = create_network("other", "10.20.0.0/24")
    create_token(other, uses=1)
    return {"uk": uk_node.peer_id, "be": be_node.peer_id, "token": token.pk, "route": route.pk,
            "tag": tag.pk, "group": group.pk, "rule": rule.pk, "other": other}


# (method, schema path, concrete path, body); every operator operation of the schema
CALLS = [
    ("get", "/api/nodes/{peer_id}", "/api/nodes/{be}", None),
    ("patch", "/api/nodes/{peer_id}", "/api/nodes/{be}", {"name": "renamed"}),
    ("post", "/api/nodes/{peer_id}/revoke", "/api/nodes/{be}/revoke", {}),
    ("delete", "/api/nodes/{peer_id}", "/api/nodes/{be}", None),
    ("put", "/api/nodes/{peer_id}/routes", "/api/nodes/{be}/routes", {"prefixes": ["192.168.9.0/24"]}),
    ("put", "/api/nodes/{peer_id}/tags", "/api/nodes/{be}/tags", {"tags": []}),
    ("get", "/api/nodes/{peer_id}/reach", "/api/nodes/{be}/reach", None),
    ("post", "/api/nodes/{peer_id}/exit-node", "/api/nodes/{be}/exit-node", {}),
    ("post", "/api/nodes/{peer_id}/exit-node/approve", "/api/nodes/{uk}/exit-node/approve", {}),
    ("delete", "/api/nodes/{peer_id}/exit-node", "/api/nodes/{uk}/exit-node", None),
    ("post", "/api/tokens", "/api/tokens", {"network": "default", "uses": 1}),
    ("post", "/api/tokens/{token_id}/revoke", "/api/tokens/{token}/revoke", {}),
    ("post", "/api/routes", "/api/routes", {"via": "{be}", "prefix": "192.168.8.0/24"}),
    ("post", "/api/routes/{route_id}/approve", "/api/routes/{route}/approve", {}),
    ("delete", "/api/routes/{route_id}", "/api/routes/{route}", None),
    ("post", "/api/tags", "/api/tags", {"network": "default", "name": "db"}),
    ("delete", "/api/tags/{tag_id}", "/api/tags/{tag}", None),
    ("post", "/api/groups", "/api/groups", {"network": "default", "name": "dev"}),
    ("patch", "/api/groups/{group_id}", "/api/groups/{group}", {"members": ["*"]}),
    ("delete", "/api/groups/{group_id}", "/api/groups/{group}", None),
    ("post", "/api/rules", "/api/rules", {"network": "default", "sources": ["*"], "destinations": ["*"]}),
    ("patch", "/api/rules/{rule_id}", "/api/rules/{rule}", {"protocol": "tcp"}),
    ("post", "/api/rules/{rule_id}/move", "/api/rules/{rule}/move", {"position": 1}),
    ("delete", "/api/rules/{rule_id}", "/api/rules/{rule}", None),
    ("put", "/api/networks/{name}/policy-default", "/api/networks/default/policy-default",
     {"default": "deny"}),
]
# lists: what a key of "other" gets when it asks for network "default" (404) and when it asks for
# no network (only its own network's rows)
LISTS = ["/api/networks", "/api/nodes", "/api/tokens", "/api/routes", "/api/exit-nodes", "/api/tags",
         "/api/groups", "/api/rules"]


def _fill(value, world):
    if isinstance(value, str):
        return value.format(**world)
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    return value


def _state() -> str:
    models = (Network, Node, EnrollmentToken, Route, Tag, Group, AccessRule)
    return "\n".join(serializers.serialize("json", m.objects.order_by("pk")) for m in models)


def test_the_table_names_every_operator_operation(client):
    schema = client.get("/api/schema").json()
    operations = {(method, path) for path, ops in schema["paths"].items() for method, op in ops.items()
                  if op.get("security") == [{"OperatorKeyAuth": []}]}
    covered = {(m, p) for m, p, _, _ in CALLS} | {("get", p) for p in LISTS}
    assert operations == covered


def test_a_key_of_another_network_finds_nothing_of_this_one_and_changes_nothing(world):
    _, plaintext = create_api_key("other-ci", network=world["other"])
    op = OperatorClient(plaintext)
    before = _state()
    for method, _, path, body in CALLS:
        path, body = _fill(path, world), _fill(body, world)
        response = getattr(op, method)(path, *([] if body is None else [body]))
        assert response.status_code == 404, (method, path, response.status_code, response.content)
        assert "no such" in response.json()["detail"], (method, path)
    assert _state() == before
    for path in LISTS:
        asked = op.get(f"{path}?network=default")
        if path == "/api/networks":  # takes no network: lists only the key's
            assert [n["name"] for n in asked.json()] == ["other"]
            continue
        assert asked.status_code == 404 and asked.json()["detail"] == "network: no such network", path
        mine = op.get(path)
        assert mine.status_code == 200, path
        assert all(row["network"] == "other" for row in mine.json()), (path, mine.json())
    assert len(op.get("/api/tokens").json()) == 1  # other's own token


def test_a_key_of_this_network_reaches_it_and_writes_land_in_it(world):
    _, plaintext = create_api_key("default-ci", network=Network.objects.get(name="default"))
    op = OperatorClient(plaintext)
    assert op.get(_fill("/api/nodes/{be}", world)).status_code == 200
    assert {n["name"] for n in op.get("/api/nodes").json()} == {"uk", "belgium"}
    assert [n["name"] for n in op.get("/api/networks").json()] == ["default"]
    # a write that names no network goes to the key's own network
    created = op.post("/api/tokens", {"uses": 1})
    assert created.status_code == 201 and created.json()["network"] == "default"
    tag = op.post("/api/tags", {"name": "db"})
    assert tag.status_code == 201 and tag.json()["network"] == "default"
    assert op.post("/api/tags", {"network": "other", "name": "db"}).status_code == 404
    assert op.get("/api/tokens?network=other").status_code == 404


def test_a_key_of_a_network_other_than_default_writes_there_when_the_body_names_none(world):
    other = world["other"]
    _, plaintext = create_api_key("other-ci", network=other)
    op = OperatorClient(plaintext)
    for path, body in (("/api/tags", {"name": "web"}), ("/api/groups", {"name": "ops"}),
                       ("/api/rules", {"sources": ["*"], "destinations": ["*"]}), ("/api/tokens", {})):
        response = op.post(path, body)
        assert response.status_code == 201 and response.json()["network"] == "other", (path, response.content)
    assert Tag.objects.get(name="web", network=other) and Group.objects.get(name="ops", network=other)
