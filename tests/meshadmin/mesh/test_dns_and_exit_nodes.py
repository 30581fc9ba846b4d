"""services: the DNS suffix, unique node names, exit nodes (advertise, approve, remove, choose).
Every write validates, bumps the serial, audits and announces; a request that changes nothing
writes nothing; and the netmaps say what the services wrote."""

from __future__ import annotations

import pytest

from meshadmin.mesh.changes import change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AuditEvent, Network, Node, Route
from meshadmin.mesh.services import Conflict, InvalidInput
from meshadmin.mesh.services.exits import (
    advertise_exit_node,
    approve_exit_node,
    exit_state,
    remove_exit_node,
    select_exit_node,
)
from meshadmin.mesh.services.networks import create_network, set_dns_suffix
from meshadmin.mesh.services.nodes import rename_node, revoke_node
from meshadmin.mesh.services.routes import create_route
from meshadmin.netmap import compute, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    received = []

    def receiver(sender, change, **kwargs):
        received.append(change.reason)

    change_announced.connect(receiver)
    yield received
    change_announced.disconnect(receiver)


@pytest.fixture
def three(enrolled):
    enrolled("uk", public=True)
    enrolled("belgium")
    enrolled("mac")
    return {n.name: n for n in Node.objects.all()}


def maps() -> dict:
    view = compute.view(snapshot.load(Network.objects.get(name="default")))
    return {view.snapshot.node(pid).name: m for pid, m in compute.netmaps_for_all(view).items()}


def serial() -> int:
    return Network.objects.get(name="default").serial


def test_the_dns_suffix_defaults_to_the_network_name_and_can_be_set(three, heard,
                                                                     django_capture_on_commit_callbacks):
    net = Network.objects.get(name="default")
    assert net.effective_dns_suffix == "default.mesh" and maps()["uk"].node.dns_suffix == "default.mesh"
    before = serial()
    with django_capture_on_commit_callbacks(execute=True):
        set_dns_suffix(net, " Corp.Example. ", actor="user:alice")
    assert Network.objects.get(pk=net.pk).dns_suffix == "corp.example" and serial() == before + 1
    assert heard == ["network.dns_changed"]
    assert all(m.node.dns_suffix == "corp.example" for m in maps().values())
    event = AuditEvent.objects.get(action=AuditAction.NETWORK_DNS_CHANGED)
    assert event.actor == "user:alice" and event.details["new"] == "corp.example"
    set_dns_suffix(net, "")
    assert maps()["mac"].node.dns_suffix == "default.mesh"
    for bad in ("bad suffix", "-x.mesh", "x.123", "a" * 64 + ".mesh"):
        with pytest.raises(InvalidInput, match=r"^dns_suffix:"):
            set_dns_suffix(net, bad)
    odd = create_network("my net", "10.40.0.0/24")
    assert odd.effective_dns_suffix is None  # a name that is no DNS label: no names until one is set


def test_a_second_node_with_a_taken_name_is_enrolled_under_a_numbered_one(api, make_token, identity_factory):
    names = []
    for _ in range(3):
        assert api.enroll(make_token(), identity_factory(), "laptop").status_code == 201
    names = sorted(Node.objects.values_list("name", flat=True))
    assert names == ["laptop", "laptop-2", "laptop-3"]
    long = "x" * 63
    assert api.enroll(make_token(), identity_factory(), long).status_code == 201
    assert api.enroll(make_token(), identity_factory(), long.upper()).status_code == 201
    assert Node.objects.filter(name="X" * 61 + "-2").exists()  # the same name, as DNS compares it


def test_a_rename_to_a_name_another_node_has_is_a_conflict(three):
    with pytest.raises(Conflict, match=r"^name:"):
        rename_node(three["belgium"], "UK")
    rename_node(three["belgium"], "Brussels")
    revoke_node(three["mac"])
    rename_node(three["belgium"], "mac")  # a revoked node's name is free again
    assert maps()["uk"].peer(three["belgium"].peer_id).name == "mac"


def test_an_exit_node_offered_approved_chosen_and_removed(three, heard, django_capture_on_commit_callbacks):
    uk, belgium = three["uk"], three["belgium"]
    before = serial()
    with django_capture_on_commit_callbacks(execute=True):
        advertise_exit_node(uk, actor=f"node:{uk.peer_id}")
        advertise_exit_node(uk)  # again: nothing to write
    assert serial() == before + 1 and heard == ["exit.advertised"]
    assert exit_state(uk) == "pending"
    assert sorted(Route.objects.filter(via=uk).values_list("prefix", "approved")) == [
        ("0.0.0.0/0", False), ("::/0", False)]
    assert not maps()["uk"].node.is_exit and not maps()["belgium"].routes  # pending: in no map

    with django_capture_on_commit_callbacks(execute=True):
        select_exit_node(belgium, uk, actor="user:alice")
        approve_exit_node(uk, actor="user:alice")
    m = maps()
    assert m["uk"].node.is_exit and m["uk"].routes == ()
    assert {r.prefix for r in m["belgium"].routes} == {"0.0.0.0/0", "::/0"}
    assert m["belgium"].node.use_exit == uk.peer_id and m["mac"].node.use_exit is None
    assert {r.prefix for r in m["mac"].routes} == {"0.0.0.0/0", "::/0"}  # offered to every member

    with django_capture_on_commit_callbacks(execute=True):
        remove_exit_node(uk, actor="user:alice")
        remove_exit_node(uk)
    m = maps()
    assert not m["uk"].node.is_exit and m["belgium"].routes == () and m["belgium"].node.use_exit is None
    assert exit_state(uk) == ""
    assert heard == ["exit.advertised", "exit.selected", "exit.approved", "exit.removed"]
    actions = list(AuditEvent.objects.filter(action__startswith="exit.").order_by("id").values_list(
        "action", "actor"))
    assert actions == [("exit.advertised", f"node:{uk.peer_id}"), ("exit.selected", "user:alice"),
                       ("exit.approved", "user:alice"), ("exit.removed", "user:alice")]
    with django_capture_on_commit_callbacks(execute=True):
        select_exit_node(belgium, None)
    assert heard[-1] == "exit.selected" and Node.objects.get(pk=belgium.pk).use_exit is None


def test_what_cannot_be_an_exit_node_or_chosen_as_one(three):
    uk, belgium = three["uk"], three["belgium"]
    with pytest.raises(Conflict):
        approve_exit_node(uk)  # nothing offered
    with pytest.raises(Conflict, match=r"^exit_node:"):
        select_exit_node(belgium, uk)
    advertise_exit_node(uk)
    with pytest.raises(InvalidInput, match=r"^exit_node:"):
        select_exit_node(uk, uk)
    other = create_network("other", "10.41.0.0/24")
    stranger = Node.objects.create(peer_id="f" * 40, name="x", network=other, overlay_ip="10.41.0.1")
    with pytest.raises(InvalidInput, match=r"^exit_node:"):
        select_exit_node(belgium, stranger)
    with pytest.raises(InvalidInput, match=r"^prefix:"):
        create_route(belgium, "0.0.0.0/0")  # a default route is an exit node's, with its own controls
    revoke_node(uk)
    with pytest.raises(Conflict):
        advertise_exit_node(uk)
