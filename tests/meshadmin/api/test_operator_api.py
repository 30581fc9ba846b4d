"""The operator operations of the REST API (meshadmin/api/operator.py) with a real database: each
write goes through the dashboard's service (audited as apikey:<prefix>, serial bumped, change
announced), read-only keys get 403 on writes, bad input is a 400 naming the field, unknown ids 404."""

from __future__ import annotations

import re

import pytest

from meshadmin.mesh.changes import change_announced
from meshadmin.mesh.choices import AuditAction, NodeStatus
from meshadmin.mesh.models import ApiKey, AuditEvent, EnrollmentToken, Network, Node, Route
from meshadmin.mesh.services.apikeys import create_api_key
from meshadmin.mesh.services.routes import create_route
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
def ro_key(db):
    return create_api_key("dashboards", read_only=True)


@pytest.fixture
def op(rw_key):
    return OperatorClient(rw_key[1])


@pytest.fixture
def ro(ro_key):
    return OperatorClient(ro_key[1])


def _node(ident) -> Node:
    return Node.objects.get(peer_id=ident.peer_id)


def _actor(key_pair) -> str:
    return f"apikey:{key_pair[0].prefix}"


def _actions(key_pair) -> list[str]:
    """What the key did, in order, as the audit log has it."""
    rows = AuditEvent.objects.filter(actor=_actor(key_pair)).order_by("id")
    return list(rows.values_list("action", flat=True))


# --------------------------------------------------------------------------- credentials


def test_without_a_key_every_operation_is_a_401_json_with_a_bearer_challenge(network):
    anonymous = OperatorClient(None)
    for method, path in [("get", "/api/nodes"), ("get", "/api/tokens"), ("get", "/api/routes"),
                         ("get", "/api/networks"), ("post", "/api/tokens")]:
        response = getattr(anonymous, method)(path)
        assert response.status_code == 401, path
        assert response["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "missing API key: send Authorization: Bearer <key>"}


def test_a_wrong_revoked_or_expired_key_and_a_node_session_token_are_refused(api, belgium, rw_key):
    key, plaintext = rw_key
    session = api.login(belgium[0])
    altered = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    for bad in ["smk_0000000000_" + "A" * 43, altered, session]:
        response = OperatorClient(bad).get("/api/nodes")
        assert response.status_code == 401
        assert response.json() == {"detail": "invalid, revoked or expired API key"}
    ApiKey.objects.filter(pk=key.pk).update(expires_at=key.created_at)
    assert OperatorClient(plaintext).get("/api/nodes").status_code == 401
    reasons = set(AuditEvent.objects.filter(action=AuditAction.APIKEY_DENIED).values_list("details__reason",
                                                                                          flat=True))
    assert reasons == {"unknown key", "expired key"}


def test_an_operator_key_does_not_open_the_node_operations(op, belgium):
    assert op.get(f"/api/peers/{belgium[0].peer_id}").status_code == 401


def test_a_read_only_key_reads_and_gets_403_on_every_write(ro, ro_key, belgium, network):
    ident, _ = belgium
    node = _node(ident)
    route = create_route(node, "192.168.9.0/24")
    token = EnrollmentToken.objects.first()
    assert ro.get("/api/nodes").status_code == 200
    assert ro.get(f"/api/nodes/{ident.peer_id}").status_code == 200
    assert ro.get("/api/tokens").status_code == 200
    writes_audited = AuditEvent.objects.exclude(action=AuditAction.APIKEY_DENIED)
    before = (Network.objects.get().serial, writes_audited.count())
    writes = [
        ro.patch(f"/api/nodes/{ident.peer_id}", {"name": "renamed"}),
        ro.post(f"/api/nodes/{ident.peer_id}/revoke"),
        ro.delete(f"/api/nodes/{ident.peer_id}"),
        ro.put(f"/api/nodes/{ident.peer_id}/routes", {"prefixes": []}),
        ro.post("/api/tokens", {}),
        ro.post(f"/api/tokens/{token.pk}/revoke"),
        ro.post("/api/routes", {"via": ident.peer_id, "prefix": "10.1.0.0/16"}),
        ro.post(f"/api/routes/{route.pk}/approve"),
        ro.delete(f"/api/routes/{route.pk}"),
    ]
    assert [r.status_code for r in writes] == [403] * len(writes)
    assert {r.json()["detail"] for r in writes} == {"this API key is read-only"}
    assert (Network.objects.get().serial, writes_audited.count()) == before
    node.refresh_from_db()
    assert (node.name, node.status) == ("belgium", NodeStatus.ACTIVE)
    denied = AuditEvent.objects.get(action=AuditAction.APIKEY_DENIED)
    assert denied.actor == _actor(ro_key) and denied.count == len(writes)


def test_a_use_is_shown_as_the_keys_last_use(op, rw_key, network):
    assert ApiKey.objects.get(pk=rw_key[0].pk).last_used_at is None
    assert op.get("/api/networks").status_code == 200
    key = ApiKey.objects.get(pk=rw_key[0].pk)
    assert key.last_used_at is not None and key.last_used_ip == "127.0.0.1"


def test_bad_keys_are_limited_per_address(settings, network, rw_key):
    settings.SHADOWMESH_RATE_LIMITS = {**settings.SHADOWMESH_RATE_LIMITS, "bearer": 3}
    bad = OperatorClient("smk_0000000000_" + "B" * 43, remote_addr="198.18.0.20")
    assert [bad.get("/api/nodes").status_code for _ in range(4)] == [401, 401, 401, 429]
    assert OperatorClient(rw_key[1], remote_addr="198.18.0.20").get("/api/nodes").status_code == 429
    assert OperatorClient(rw_key[1], remote_addr="198.18.0.21").get("/api/nodes").status_code == 200


# --------------------------------------------------------------------------- networks and nodes


def test_networks_are_listed_with_their_active_nodes(op, uk, belgium):
    from meshadmin.mesh.services.nodes import revoke_node

    revoke_node(_node(belgium[0]))
    body = op.get("/api/networks").json()
    assert [(n["name"], n["overlay_cidr"], n["nodes"]) for n in body] == [("default", "10.10.10.0/24", 1)]


def test_nodes_are_listed_and_shown(op, uk, belgium, api):
    ident, enrolled = belgium
    api.login(ident)
    assert api.post("/api/peers/register", {"ip": "198.18.0.4", "port": 7000, "udp_port": 7001,
                                            "is_public": False}).status_code == 200
    create_route(_node(ident), "192.168.1.0/24", approved=True)
    rows = op.get("/api/nodes").json()
    assert [r["name"] for r in rows] == ["belgium", "uk"]
    shown = op.get(f"/api/nodes/{ident.peer_id}").json()
    assert shown == next(r for r in rows if r["peer_id"] == ident.peer_id)
    assert shown["overlay_ip"] == enrolled["overlay_ip"] and shown["status"] == "active"
    assert shown["network"] == "default" and shown["online"] is False
    assert shown["endpoint"] == {"ip": "198.18.0.4", "port": 7000, "udp_port": 7001, "is_public": False}
    assert [(r["prefix"], r["approved"]) for r in shown["routes"]] == [("192.168.1.0/24", True)]
    assert op.get(f"/api/nodes/{uk[0].peer_id}").json()["is_public"] is True


def test_node_filters_and_their_errors(op, uk, belgium):
    from meshadmin.mesh.services.nodes import revoke_node

    revoke_node(_node(belgium[0]))
    assert [r["name"] for r in op.get("/api/nodes?status=revoked").json()] == ["belgium"]
    assert [r["name"] for r in op.get("/api/nodes?status=active&network=default").json()] == ["uk"]
    response = op.get("/api/nodes?status=gone")
    assert response.status_code == 400 and response.json()["detail"].startswith("status:")
    response = op.get("/api/nodes?network=nowhere")
    assert response.status_code == 404 and response.json()["detail"] == "network: no such network"


def test_unknown_node_ids_are_404_and_malformed_ones_400(op, network):
    for response in (op.get("/api/nodes/" + "0" * 40), op.patch("/api/nodes/" + "0" * 40, {"name": "x"}),
                     op.post("/api/nodes/" + "0" * 40 + "/revoke"), op.delete("/api/nodes/" + "0" * 40),
                     op.put("/api/nodes/" + "0" * 40 + "/routes", {"prefixes": []})):
        assert response.status_code == 404 and response.json() == {"detail": "no such node"}
    response = op.get("/api/nodes/not-a-peer-id")
    assert response.status_code == 400 and response.json()["detail"].startswith("peer_id:")


def test_renaming_goes_through_the_service(op, rw_key, belgium, heard, django_capture_on_commit_callbacks):
    ident, _ = belgium
    serial = Network.objects.get().serial
    with django_capture_on_commit_callbacks(execute=True):
        response = op.patch(f"/api/nodes/{ident.peer_id}", {"name": "brussels"})
    assert response.status_code == 200 and response.json()["name"] == "brussels"
    assert _node(ident).name == "brussels"
    event = AuditEvent.objects.get(action=AuditAction.NODE_RENAMED)
    assert event.actor == _actor(rw_key) and event.details == {"old": "belgium", "new": "brussels"}
    assert Network.objects.get().serial == serial + 1
    assert [c.reason for c in heard] == ["node.renamed"]


@pytest.mark.parametrize(("body", "field"), [
    ({"name": ""}, "name"), ({"name": "x" * 64}, "name"), ({"name": "bad\u0007name"}, "name"),
    ({"name": 5}, "name"), ({"name": "   "}, "name"), ({"nmae": "typo"}, "nmae"),
])
def test_a_bad_rename_is_a_400_naming_the_field_and_changes_nothing(op, belgium, body, field):
    ident, _ = belgium
    response = op.patch(f"/api/nodes/{ident.peer_id}", body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:")
    assert _node(ident).name == "belgium"
    assert not AuditEvent.objects.filter(action=AuditAction.NODE_RENAMED).exists()


def test_revoking_and_deleting(op, rw_key, belgium, mac, heard, django_capture_on_commit_callbacks):
    be, mc = belgium[0], mac[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = op.post(f"/api/nodes/{be.peer_id}/revoke")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked" and response.json()["overlay_ip"] is None
    assert op.post(f"/api/nodes/{be.peer_id}/revoke").status_code == 409
    response = op.delete(f"/api/nodes/{be.peer_id}")
    assert response.status_code == 409 and "revoked node cannot be deleted" in response.json()["detail"]
    with django_capture_on_commit_callbacks(execute=True):
        response = op.delete(f"/api/nodes/{mc.peer_id}")
    assert response.status_code == 204 and response.content == b""
    assert not Node.objects.filter(peer_id=mc.peer_id).exists()
    assert op.get(f"/api/nodes/{mc.peer_id}").status_code == 404
    assert [c.reason for c in heard] == ["node.revoked", "node.deleted"]
    actors = set(AuditEvent.objects.filter(action__in=[AuditAction.NODE_REVOKED, AuditAction.NODE_DELETED])
                 .values_list("actor", flat=True))
    assert actors == {_actor(rw_key)}


def test_setting_a_nodes_routes(op, rw_key, belgium, heard, django_capture_on_commit_callbacks):
    ident, _ = belgium
    node = _node(ident)
    old = create_route(node, "192.168.1.0/24")
    path = f"/api/nodes/{ident.peer_id}/routes"
    with django_capture_on_commit_callbacks(execute=True):
        response = op.put(path, {"prefixes": ["192.168.1.0/24", "10.20.0.0/16", "10.20.0.0/16"]})
    assert response.status_code == 200
    assert [(r["prefix"], r["approved"], r["via"]) for r in response.json()] == [
        ("10.20.0.0/16", False, ident.peer_id), ("192.168.1.0/24", False, ident.peer_id)]
    assert [c.reason for c in heard] == ["route.created"]
    response = op.put(path, {"prefixes": ["10.20.0.0/16", "fd00:1::/64"], "approved": True})
    assert [(r["prefix"], r["approved"]) for r in response.json()] == [
        ("10.20.0.0/16", True), ("fd00:1::/64", True)]
    assert not Route.objects.filter(pk=old.pk).exists()
    assert _actions(rw_key) == [AuditAction.ROUTE_CREATED, AuditAction.ROUTE_APPROVED,
                                AuditAction.ROUTE_CREATED, AuditAction.ROUTE_DELETED]
    assert op.put(path, {"prefixes": []}).json() == []
    assert not Route.objects.filter(via=node).exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"prefixes": ["10.0.0.0/8", "10.0.0.1/8"]}, "prefixes[1]"),
    ({"prefixes": ["not a prefix"]}, "prefixes[0]"),
    ({"prefixes": ["0.0.0.0/0"]}, "prefixes[0]"),
    ({"prefixes": "10.0.0.0/8"}, "prefixes"),
    ({"prefixes": [10]}, "prefixes.0"),
    ({}, "prefixes"),
    ({"prefixes": [], "approved": "yes"}, "approved"),
])
def test_bad_routes_are_a_400_naming_the_field_and_nothing_is_written(op, belgium, body, field):
    ident, _ = belgium
    create_route(_node(ident), "192.168.1.0/24")
    serial = Network.objects.get().serial
    response = op.put(f"/api/nodes/{ident.peer_id}/routes", body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert list(Route.objects.values_list("prefix", flat=True)) == ["192.168.1.0/24"]
    assert Network.objects.get().serial == serial


def test_routes_through_a_revoked_node_are_refused(op, belgium):
    from meshadmin.mesh.services.nodes import revoke_node

    revoke_node(_node(belgium[0]))
    response = op.put(f"/api/nodes/{belgium[0].peer_id}/routes", {"prefixes": ["10.0.0.0/8"]})
    assert response.status_code == 409


# --------------------------------------------------------------------------- enrollment tokens


def test_a_token_made_through_the_api_is_shown_once_and_enrolls(op, rw_key, api, identity_factory, network):
    response = op.post("/api/tokens", {"uses": 2, "expires_in": 3600, "is_public": False})
    assert response.status_code == 201
    made = response.json()
    assert made["state"] == "active" and made["uses"] == made["uses_left"] == 2
    assert made["token"].startswith(made["prefix"])
    assert api.enroll(made["token"], identity_factory(), "laptop").status_code == 201
    listed = op.get("/api/tokens").json()
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert listed[0]["uses_left"] == 1
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_CREATED)
    assert event.actor == _actor(rw_key) and made["token"] not in str(event.details)


def test_token_defaults_create_the_default_network_when_there_is_none(op):
    response = op.post("/api/tokens", {})
    assert response.status_code == 201
    assert response.json()["network"] == "default" and response.json()["uses"] == 1
    assert Network.objects.filter(name="default").exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"uses": 0}, "uses"), ({"uses": 10_001}, "uses"), ({"uses": "2"}, "uses"), ({"uses": 1.5}, "uses"),
    ({"expires_in": 0}, "expires_in"), ({"expires_in": 365 * 86400 + 1}, "expires_in"),
    ({"is_public": "no"}, "is_public"), ({"network": ""}, "network"),
    ({"token": "mine"}, "token"),
])
def test_bad_token_requests_are_a_400_naming_the_field(op, network, body, field):
    response = op.post("/api/tokens", body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not EnrollmentToken.objects.exists()


def test_names_of_absent_things_in_a_body_are_404_naming_the_field(op, network):
    response = op.post("/api/tokens", {"network": "nowhere"})
    assert response.status_code == 404 and response.json() == {"detail": "network: no such network"}
    response = op.post("/api/routes", {"via": "0" * 40, "prefix": "10.0.0.0/8"})
    assert response.status_code == 404 and response.json() == {"detail": "via: no such node"}
    assert not EnrollmentToken.objects.exists() and not Route.objects.exists()


def test_a_whole_number_written_as_a_float_is_an_integer(op, network):
    assert op.post("/api/tokens", {"uses": 3.0}).json()["uses"] == 3


def test_revoking_a_token(op, rw_key, network, make_token, api, identity_factory):
    plaintext = make_token(uses=5)
    token = EnrollmentToken.objects.get()
    response = op.post(f"/api/tokens/{token.pk}/revoke")
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    assert api.enroll(plaintext, identity_factory(), "late").status_code == 403
    assert op.post(f"/api/tokens/{token.pk}/revoke").status_code == 409
    assert op.post("/api/tokens/999999/revoke").status_code == 404
    assert op.post("/api/tokens/0/revoke").status_code == 400
    assert AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKED).actor == _actor(rw_key)
    assert [t["state"] for t in op.get("/api/tokens?active=false").json()] == ["revoked"]
    assert op.get("/api/tokens?active=true").json() == []


# --------------------------------------------------------------------------- routes


def test_routes_are_created_listed_approved_and_deleted(op, rw_key, belgium, heard,
                                                        django_capture_on_commit_callbacks):
    ident, _ = belgium
    with django_capture_on_commit_callbacks(execute=True):
        response = op.post("/api/routes", {"via": ident.peer_id, "prefix": "192.168.5.0/24"})
    assert response.status_code == 201
    route = response.json()
    assert (route["prefix"], route["via"], route["via_name"], route["approved"]) == (
        "192.168.5.0/24", ident.peer_id, "belgium", False)
    assert [r["id"] for r in op.get("/api/routes?approved=false").json()] == [route["id"]]
    assert op.get("/api/routes?approved=true").json() == []
    assert op.post("/api/routes", {"via": ident.peer_id, "prefix": "192.168.5.0/24"}).status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        approved = op.post(f"/api/routes/{route['id']}/approve")
    assert approved.status_code == 200 and approved.json()["approved"] is True
    assert op.post(f"/api/routes/{route['id']}/approve").status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        assert op.delete(f"/api/routes/{route['id']}").status_code == 204
    assert op.delete(f"/api/routes/{route['id']}").status_code == 404
    assert op.post(f"/api/routes/{route['id']}/approve").status_code == 404
    assert [c.reason for c in heard] == ["route.created", "route.approved", "route.deleted"]
    assert _actions(rw_key) == [
        AuditAction.ROUTE_CREATED, AuditAction.ROUTE_APPROVED, AuditAction.ROUTE_DELETED]


@pytest.mark.parametrize(("body", "field"), [
    ({"via": "nope", "prefix": "10.0.0.0/8"}, "via"),
    ({"prefix": "10.0.0.0/8"}, "via"),
    ({"via": None, "prefix": "10.1.2.3/8"}, "via"),
    ("BELGIUM", "prefix"),
])
def test_bad_route_requests_are_a_400_naming_the_field(op, belgium, body, field):
    if body == "BELGIUM":
        body = {"via": belgium[0].peer_id, "prefix": "10.1.2.3/8"}
    response = op.post("/api/routes", body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not Route.objects.exists()


def test_the_schema_lists_the_operator_operations_under_their_key(client):
    response = client.get("/api/schema")
    assert not re.search(rb'"(ge|le|gt|lt)":', response.content)  # bounds JSON Schema would not see
    schema = response.json()
    assert schema["components"]["securitySchemes"]["OperatorKeyAuth"]["scheme"] == "bearer"
    for path, method in [("/api/nodes", "get"), ("/api/nodes/{peer_id}", "patch"),
                         ("/api/nodes/{peer_id}/routes", "put"), ("/api/tokens", "post"),
                         ("/api/routes/{route_id}", "delete")]:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"OperatorKeyAuth": []}]
        assert {"400", "401", "404"} <= set(operation["responses"])
        if method != "get":
            assert {"403", "409"} <= set(operation["responses"])
