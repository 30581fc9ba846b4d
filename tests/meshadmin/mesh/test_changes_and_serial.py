"""Every write bumps Network.serial in its transaction and announces a Change after commit."""

import pytest
from django.db import transaction

from meshadmin.mesh.changes import ALL_NODES, Change, announce, change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    received = []

    def receiver(sender, change, **kwargs):
        received.append(change)

    change_announced.connect(receiver)
    yield received
    change_announced.disconnect(receiver)


def test_an_enrollment_bumps_the_serial_and_announces_after_commit(
    heard, api, make_token, identity_factory, django_capture_on_commit_callbacks
):
    token = make_token()
    serial = Network.objects.get().serial
    with django_capture_on_commit_callbacks(execute=True):
        assert api.enroll(token, identity_factory(), "belgium").status_code == 201
    assert Network.objects.get().serial == serial + 1
    assert [c.reason for c in heard] == ["node.enrolled"]
    assert heard[0].serial == serial + 1 and heard[0].node_ids is ALL_NODES


def test_a_refused_enrollment_changes_nothing_and_announces_nothing(
    heard, api, identity_factory, django_capture_on_commit_callbacks
):
    from meshadmin.mesh.services.networks import get_or_create_network

    serial = get_or_create_network().serial
    with django_capture_on_commit_callbacks(execute=True):
        assert api.enroll("bogus", identity_factory(), "x").status_code == 403
    assert Network.objects.get().serial == serial
    assert heard == []


def test_nothing_is_announced_when_the_transaction_rolls_back(
    heard, network, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                announce(Change(network.pk, "test"))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
    assert heard == []


def test_a_failing_receiver_does_not_break_the_write(network, django_capture_on_commit_callbacks, heard):
    def broken(sender, change, **kwargs):
        raise ValueError("listener bug")

    change_announced.connect(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            announce(Change(network.pk, "test"))
    finally:
        change_announced.disconnect(broken)
    assert [c.reason for c in heard] == ["test"]


def test_rename_revoke_and_delete_each_bump_the_serial_and_are_audited(belgium, mac):
    from meshadmin.mesh.services.nodes import delete_node, rename_node, revoke_node

    be_ident, _ = belgium
    mac_ident, _ = mac
    steps = [
        (
            lambda: rename_node(Node.objects.get(peer_id=be_ident.peer_id), "brussels"),
            AuditAction.NODE_RENAMED,
        ),
        (lambda: revoke_node(Node.objects.get(peer_id=be_ident.peer_id)), AuditAction.NODE_REVOKED),
        (lambda: delete_node(Node.objects.get(peer_id=mac_ident.peer_id)), AuditAction.NODE_DELETED),
    ]
    for step, action in steps:
        before = Network.objects.get().serial
        step()
        assert Network.objects.get().serial == before + 1
        assert AuditEvent.objects.filter(action=action).count() == 1


def test_routes_are_created_approved_and_deleted_through_the_service(belgium):
    from meshadmin.mesh.services import Conflict, InvalidInput
    from meshadmin.mesh.services.routes import approve_route, create_route, delete_route

    ident, _ = belgium
    node = Node.objects.get(peer_id=ident.peer_id)
    serial = Network.objects.get().serial
    route = create_route(node, "192.168.1.0/24")
    assert not route.approved
    assert approve_route(route).approved
    with pytest.raises(Conflict):
        create_route(node, "192.168.1.0/24")
    with pytest.raises(InvalidInput):
        create_route(node, "192.168.1.1/24")
    delete_route(route)
    assert Network.objects.get().serial == serial + 3


def test_changes_of_one_network_merge():
    a = Change(1, "node.enrolled", frozenset({1}), serial=4)
    b = Change(1, "route.created", frozenset({2}), serial=5)
    merged = a.merge(b)
    assert merged.node_ids == frozenset({1, 2}) and merged.serial == 5
    assert a.merge(Change(1, "x")).node_ids is ALL_NODES
    with pytest.raises(ValueError):
        a.merge(Change(2, "x"))
