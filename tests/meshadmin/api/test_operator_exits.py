"""Exit nodes through the operator API (meshadmin/api/operator_exits.py): offered, approved,
chosen for a node and removed through services/exits.py, audited as the key and announced."""

from __future__ import annotations

import pytest

from meshadmin.mesh.changes import change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node, Route
from meshadmin.mesh.services.apikeys import create_api_key
from meshadmin.mesh.services.exits import EXIT_PREFIXES, advertise_exit_node
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


def _node(persona) -> Node:
    return Node.objects.get(peer_id=persona[0].peer_id)


def test_an_offer_is_approved_listed_chosen_and_removed(op, rw_key, uk, belgium, heard,
                                                        django_capture_on_commit_callbacks):
    hub, laptop = uk[0].peer_id, belgium[0].peer_id
    advertise_exit_node(_node(uk))  # the node offered itself (up --advertise-exit-node)
    assert op.get("/api/exit-nodes").json() == [
        {"peer_id": hub, "name": "uk", "network": "default", "state": "pending", "used_by": []}]
    assert op.get(f"/api/nodes/{hub}").json()["exit_node"] == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        response = op.post(f"/api/nodes/{hub}/exit-node/approve")
    assert response.status_code == 200 and response.json()["state"] == "approved"
    assert op.post(f"/api/nodes/{hub}/exit-node/approve").status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        response = op.patch(f"/api/nodes/{laptop}", {"exit_node": hub})
    assert response.status_code == 200 and response.json()["use_exit"] == hub
    assert op.get("/api/exit-nodes").json()[0]["used_by"] == [laptop]
    # the routes of the node page stay subnet routes: the default ones are the exit node's state
    assert op.get(f"/api/nodes/{hub}").json()["routes"] == []
    with django_capture_on_commit_callbacks(execute=True):
        assert op.patch(f"/api/nodes/{laptop}", {"exit_node": None}).json()["use_exit"] is None
    with django_capture_on_commit_callbacks(execute=True):
        assert op.delete(f"/api/nodes/{hub}/exit-node").status_code == 204
    assert op.delete(f"/api/nodes/{hub}/exit-node").status_code == 409
    assert op.get("/api/exit-nodes").json() == []
    assert not Route.objects.filter(prefix__in=EXIT_PREFIXES).exists()
    assert [c.reason for c in heard] == ["exit.approved", "exit.selected", "exit.selected", "exit.removed"]
    actions = list(AuditEvent.objects.filter(actor=f"apikey:{rw_key[0].prefix}").order_by("id")
                   .values_list("action", flat=True))
    assert actions == [AuditAction.EXIT_APPROVED, AuditAction.EXIT_SELECTED, AuditAction.EXIT_SELECTED,
                       AuditAction.EXIT_REMOVED]


def test_an_operator_may_offer_a_node_approved_at_once(op, uk):
    hub = uk[0].peer_id
    response = op.post(f"/api/nodes/{hub}/exit-node", {"approved": True})
    assert response.status_code == 200 and response.json()["state"] == "approved"
    assert set(Route.objects.filter(approved=True).values_list("prefix", flat=True)) == set(EXIT_PREFIXES)
    pending = op.post(f"/api/nodes/{hub}/exit-node", {})  # offered already: nothing changes
    assert pending.status_code == 200 and pending.json()["state"] == "approved"


def test_an_offer_made_pending_is_approved_by_offering_it_approved(op, uk):
    hub = uk[0].peer_id
    assert op.post(f"/api/nodes/{hub}/exit-node", {}).json()["state"] == "pending"
    assert op.post(f"/api/nodes/{hub}/exit-node", {"approved": True}).json()["state"] == "approved"


def test_refusals(op, uk, belgium):
    hub, laptop = uk[0].peer_id, belgium[0].peer_id
    serial = Network.objects.get().serial
    assert op.post(f"/api/nodes/{hub}/exit-node/approve").status_code == 409  # not offered
    assert op.delete(f"/api/nodes/{hub}/exit-node").status_code == 409
    response = op.patch(f"/api/nodes/{laptop}", {"exit_node": hub})  # not an exit node
    assert response.status_code == 409 and response.json()["detail"].startswith("exit_node:")
    response = op.patch(f"/api/nodes/{laptop}", {"exit_node": "0" * 40})
    assert response.status_code == 404 and response.json()["detail"] == "exit_node: no such node"
    response = op.patch(f"/api/nodes/{laptop}", {"exit_node": "uk"})
    assert response.status_code == 400 and response.json()["detail"].startswith("exit_node:")
    assert op.post("/api/nodes/" + "0" * 40 + "/exit-node", {}).status_code == 404
    assert op.post(f"/api/nodes/{hub}/exit-node", {"approved": "yes"}).status_code == 400
    assert Network.objects.get().serial == serial


def test_a_read_only_key_cannot_touch_exit_nodes(uk, network):
    _, plaintext = create_api_key("ro", read_only=True)
    ro = OperatorClient(plaintext)
    hub = uk[0].peer_id
    assert ro.get("/api/exit-nodes").status_code == 200
    assert ro.post(f"/api/nodes/{hub}/exit-node", {"approved": True}).status_code == 403
    assert ro.post(f"/api/nodes/{hub}/exit-node/approve").status_code == 403
    assert ro.delete(f"/api/nodes/{hub}/exit-node").status_code == 403
    assert not Route.objects.exists()
