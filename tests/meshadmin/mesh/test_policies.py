"""The access-policy services (meshadmin/mesh/services/policies.py): what each write stores, the
field every refusal names, the audit event and the announcement each write leaves, and the
reachability read the dashboard (and the operator API) show."""

from __future__ import annotations

import pytest

from meshadmin.mesh.changes import ALL_NODES, change_announced
from meshadmin.mesh.choices import AuditAction
from meshadmin.mesh.models import AccessRule, AuditEvent, Group, Network, Node
from meshadmin.mesh.services import exits
from meshadmin.mesh.services import policies as svc
from meshadmin.mesh.services.errors import Conflict, InvalidInput
from meshadmin.netmap import compute, snapshot
from nodeagent.policy.filter import PacketFilter
from tests.nodeagent.policy.packets import ACK, SYN, tcp4

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
def nodes(network, uk, belgium, mac):
    return {n.name: n for n in Node.objects.filter(network=network)}


def last_audit() -> AuditEvent:
    return AuditEvent.objects.order_by("-pk").first()


def netmap(network: Network, node: Node):
    return compute.netmap_for(snapshot.load(network.pk), node.peer_id)


def test_a_rule_is_stored_canonical_audited_and_announced_to_every_node(
    network, nodes, heard, django_capture_on_commit_callbacks
):
    svc.create_tag(network, "web")
    svc.set_node_tags(nodes["belgium"], ["web"])
    serial = Network.objects.get().serial
    heard.clear()
    with django_capture_on_commit_callbacks(execute=True):
        rule = svc.create_rule(
            network,
            sources="node:mac, tag:web",
            destinations=["tag:web"],
            protocol="TCP",
            ports="443, 80, 8000-8080",
            description="web",
            actor="user:alice",
        )
    assert rule.sources == ["node:" + nodes["mac"].peer_id, "tag:web"]
    assert (rule.destinations, rule.protocol, rule.ports) == (
        ["tag:web"],
        "tcp",
        [[80, 80], [443, 443], [8000, 8080]],
    )
    assert rule.position == 1
    event = last_audit()
    assert (event.action, event.actor, event.object_id) == (
        AuditAction.RULE_CREATED,
        "user:alice",
        str(rule.pk),
    )
    assert event.details["ports"] == "80, 443, 8000-8080"
    assert Network.objects.get().serial == serial + 1
    assert [(c.reason, c.node_ids) for c in heard] == [("rule.created", ALL_NODES)]


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"sources": ""}, "sources", "name at least one node"),
        ({"sources": "tag:nope"}, "sources", "no tag named 'nope'"),
        ({"sources": "node:ghost"}, "sources", "no active node named 'ghost'"),
        ({"sources": "host:x"}, "sources", "is not a selector"),
        ({"sources": "group:missing"}, "sources", "no group named 'missing'"),
        ({"destinations": "tag"}, "destinations", "is not a selector"),
        ({"protocol": "sctp"}, "protocol", "must be one of"),
        ({"ports": "ssh"}, "ports", "'ssh' is not a port"),
        ({"ports": "0"}, "ports", ""),
        ({"ports": "70000"}, "ports", ""),
        ({"protocol": "icmp", "ports": "22"}, "ports", "only tcp and udp"),
        ({"description": "x" * 201}, "description", "at most 200"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field_and_nothing_changes(
    network, nodes, heard, fields, field, says
):
    good = {"sources": "*", "destinations": "node:uk", "protocol": "tcp", "ports": "22"}
    serial = Network.objects.get().serial
    events = AuditEvent.objects.count()
    with pytest.raises(InvalidInput) as refused:
        svc.create_rule(network, **{**good, **fields})
    assert refused.value.detail.startswith(f"{field}: ")
    assert says in refused.value.detail
    assert AccessRule.objects.count() == 0
    assert Network.objects.get().serial == serial and AuditEvent.objects.count() == events


def test_rules_are_inserted_moved_and_deleted_keeping_positions_dense(network, nodes):
    a, b, c = (
        svc.create_rule(network, sources="*", destinations="node:uk", protocol="tcp", ports=str(p))
        for p in (1, 2, 3)
    )
    d = svc.create_rule(network, sources="*", destinations="node:uk", protocol="tcp", ports="4", position=1)

    def order():
        return [r.ports[0][0] for r in AccessRule.objects.filter(network=network).order_by("position")]

    assert order() == [4, 1, 2, 3]
    svc.move_rule(d, 4, actor="user:alice")
    assert order() == [1, 2, 3, 4]
    assert (last_audit().action, last_audit().details) == (AuditAction.RULE_MOVED, {"old": 1, "new": 4})
    svc.move_rule(c, 1)
    assert order() == [3, 1, 2, 4]
    svc.move_rule(a, 99)  # clamped to the end
    assert order() == [3, 2, 4, 1]
    svc.delete_rule(b)
    assert order() == [3, 4, 1]
    assert sorted(AccessRule.objects.values_list("position", flat=True)) == [1, 2, 3]


def test_moving_a_rule_changes_no_node_map(network, nodes, heard, django_capture_on_commit_callbacks):
    svc.set_policy_default(network, "deny")
    first = svc.create_rule(network, sources="node:mac", destinations="node:uk", protocol="tcp", ports="22")
    svc.create_rule(network, sources="node:belgium", destinations="node:uk", protocol="udp", ports="53")
    before = netmap(network, nodes["uk"]).policy
    heard.clear()
    with django_capture_on_commit_callbacks(execute=True):
        svc.move_rule(first, 2)
    assert netmap(network, nodes["uk"]).policy == before
    assert [c.node_ids for c in heard] == [frozenset()]


def test_a_rule_edit_is_audited_with_old_and_new(network, nodes):
    rule = svc.create_rule(network, sources="*", destinations="node:uk", protocol="tcp", ports="22")
    svc.update_rule(
        rule, sources="node:mac", destinations="node:uk", protocol="udp", ports="53", actor="user:bob"
    )
    event = last_audit()
    assert event.action == AuditAction.RULE_UPDATED and event.actor == "user:bob"
    assert event.details["old"]["protocol"] == "tcp" and event.details["old"]["ports"] == "22"
    assert event.details["new"]["protocol"] == "udp" and event.details["new"]["ports"] == "53"
    with pytest.raises(InvalidInput, match=r"^ports: "):
        svc.update_rule(rule, sources="*", destinations="node:uk", protocol="tcp", ports="1-2-3")
    rule.refresh_from_db()
    assert rule.protocol == "udp"


def test_tags_and_groups_validate_their_names_and_refuse_deletion_while_used(network, nodes):
    with pytest.raises(InvalidInput, match=r"^name: 'Web Servers' is not a name"):
        svc.create_tag(network, "Web Servers")
    svc.create_tag(network, "web")
    with pytest.raises(Conflict, match=r"^name: a tag named 'web' already exists"):
        svc.create_tag(network, "web")
    with pytest.raises(InvalidInput, match=r"^tags: no tag named 'db'"):
        svc.set_node_tags(nodes["uk"], ["web", "db"])
    assert list(nodes["uk"].tags.all()) == []
    with pytest.raises(InvalidInput, match=r"^members: a group's members are nodes and tags, not groups"):
        svc.create_group(network, "g", "group:other")
    group = svc.create_group(network, "servers", "tag:web, node:uk")
    assert group.members == ["tag:web", "node:" + nodes["uk"].peer_id]
    rule = svc.create_rule(network, sources="group:servers", destinations="*")
    with pytest.raises(Conflict, match="tag web is used by group servers"):
        svc.delete_tag(svc.ensure_tags(network, ["web"])[0])
    with pytest.raises(Conflict, match="group servers is used by rule 1"):
        svc.delete_group(group)
    svc.delete_rule(rule)
    svc.delete_group(group)
    svc.delete_tag(svc.ensure_tags(network, ["web"])[0])
    assert not Group.objects.exists()
    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert actions[-3:] == [AuditAction.RULE_DELETED, AuditAction.GROUP_DELETED, AuditAction.TAG_DELETED]


def test_tagging_a_node_is_audited_and_changes_what_the_maps_say(
    network, nodes, heard, django_capture_on_commit_callbacks
):
    svc.set_policy_default(network, "deny")
    svc.create_tag(network, "admin")
    svc.create_rule(network, sources="tag:admin", destinations="node:belgium", protocol="tcp", ports="22")
    belgium, mac = nodes["belgium"], nodes["mac"]  # (uk is a relay: every map lists it, it lists all)
    assert mac.peer_id not in {p.peer_id for p in netmap(network, belgium).peers}
    heard.clear()
    with django_capture_on_commit_callbacks(execute=True):
        svc.set_node_tags(mac, ["admin"], actor="user:alice")
    event = last_audit()
    assert (event.action, event.details["old"], event.details["new"]) == (
        AuditAction.NODE_TAGGED,
        [],
        ["admin"],
    )
    assert [c.node_ids for c in heard] == [ALL_NODES]
    assert mac.peer_id in {p.peer_id for p in netmap(network, belgium).peers}
    rules = netmap(network, belgium).policy.rules
    assert any(
        r.src == (f"{mac.overlay_ip}/32",) and r.proto == "tcp" and r.ports == ((22, 22),) for r in rules
    )


def test_the_default_is_validated_audited_and_announced(
    network, nodes, heard, django_capture_on_commit_callbacks
):
    with pytest.raises(InvalidInput, match=r"^default: must be one of allow, deny"):
        svc.set_policy_default(network, "block")
    with django_capture_on_commit_callbacks(execute=True):
        svc.set_policy_default(network, "deny", actor="user:alice")
    assert Network.objects.get().policy_default == "deny"
    assert (last_audit().action, last_audit().details) == (
        AuditAction.POLICY_DEFAULT_CHANGED,
        {"old": "allow", "new": "deny"},
    )
    assert [(c.reason, c.node_ids) for c in heard] == [("policy.default", ALL_NODES)]
    # belgium may reach nobody and nobody may reach it: its map lists the relay only
    assert [p.peer_id for p in netmap(network, nodes["belgium"]).peers] == [nodes["uk"].peer_id]


def test_reachability_lists_who_can_reach_a_node_and_what_it_can_reach(network, nodes):
    uk, belgium, mac = nodes["uk"], nodes["belgium"], nodes["mac"]
    everyone = svc.reachability(uk)
    assert not everyone["isolated"]
    assert [(e["name"], e["everything"]) for e in everyone["reached_by"]] == [
        ("belgium", True),
        ("mac", True),
    ]
    svc.set_policy_default(network, "deny")
    svc.create_rule(network, sources="node:mac", destinations="node:uk", protocol="tcp", ports="22, 443")
    svc.create_rule(network, sources="node:mac", destinations="node:uk", protocol="udp")
    svc.create_rule(network, sources="node:uk", destinations="node:belgium", protocol="icmp")
    r = svc.reachability(uk)
    assert r["isolated"]
    assert r["reached_by"] == [
        {
            "peer_id": mac.peer_id,
            "name": "mac",
            "everything": False,
            "allowed": [{"protocol": "tcp", "ports": "22, 443"}, {"protocol": "udp", "ports": ""}],
        }
    ]
    assert r["reaches"] == [
        {
            "peer_id": belgium.peer_id,
            "name": "belgium",
            "everything": False,
            "allowed": [{"protocol": "icmp", "ports": ""}],
        }
    ]
    assert svc.reachability(belgium)["reaches"] == []


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda net: svc.create_rule(net, sources=7, destinations="*"), "sources"),
        (lambda net: svc.create_rule(net, sources="*", destinations=None), "destinations"),
        (lambda net: svc.create_rule(net, sources="*", destinations="*", protocol=6), "protocol"),
        (lambda net: svc.create_rule(net, sources="*", destinations="*", protocol="tcp", ports=22), "ports"),
        (
            lambda net: svc.create_rule(net, sources="*", destinations="*", protocol="tcp", ports=[[22]]),
            "ports",
        ),
        (
            lambda net: svc.create_rule(
                net, sources="*", destinations="*", protocol="tcp", ports=[[True, 5]]
            ),
            "ports",
        ),
        (lambda net: svc.create_rule(net, sources="*", destinations="*", position="first"), "position"),
        (lambda net: svc.create_rule(net, sources="*", destinations="*", position=0), "position"),
        (lambda net: svc.create_rule(net, sources="*", destinations="*", description=5), "description"),
        (lambda net: svc.create_tag(net, 12), "name"),
        (lambda net: svc.create_group(net, "ops", {"tag": "x"}), "members"),
        (lambda net: svc.set_policy_default(net, None), "default"),
    ],
)
def test_values_of_the_wrong_type_are_refused_naming_the_field(network, nodes, call, field):
    """What an API client may send (JSON numbers, objects, null) gets InvalidInput, never a crash."""
    with pytest.raises(InvalidInput) as refused:
        call(network)
    assert refused.value.detail.startswith(f"{field}: ")
    assert not AccessRule.objects.exists()


def test_updates_change_only_what_is_given_and_positions_are_checked(network, nodes):
    rule = svc.create_rule(
        network, sources="*", destinations="node:uk", protocol="tcp", ports="22", description="ssh"
    )
    svc.update_rule(rule, ports="22, 2222")
    rule.refresh_from_db()
    assert (rule.sources, rule.protocol, rule.ports, rule.description) == (
        ["*"],
        "tcp",
        [[22, 22], [2222, 2222]],
        "ssh",
    )
    svc.update_rule(rule, protocol="icmp")  # no ports for icmp: the old ones are not carried over
    rule.refresh_from_db()
    assert (rule.protocol, rule.ports) == ("icmp", [])
    with pytest.raises(InvalidInput, match=r"^position: "):
        svc.move_rule(rule, -1)
    assert svc.move_rule(rule, "1").position == 1
    group = svc.create_group(network, "ops", "node:uk", description="the ops team")
    svc.update_group(group, members=["*"])
    group.refresh_from_db()
    assert (group.members, group.description) == (["*"], "the ops team")
    with pytest.raises(InvalidInput, match=r"^tags: "):
        svc.set_node_tags(nodes["uk"], "web")  # a string is not a list of names


# ------------------------------------------------------------------------ the internet, through exit nodes


def test_internet_is_a_rule_destination_only(network, nodes):
    assert svc.create_rule(network, sources="node:mac", destinations="internet").destinations == ["internet"]
    both = svc.create_rule(network, sources="*", destinations="internet, *, tag:none-such")
    assert both.destinations == ["*", "internet"]
    with pytest.raises(InvalidInput) as refused:
        svc.create_rule(network, sources="internet", destinations="node:uk")
    assert refused.value.detail.startswith("sources: 'internet' is only a rule's destination")
    with pytest.raises(InvalidInput) as refused:
        svc.create_group(network, "out", members="node:mac, internet")
    assert refused.value.detail.startswith("members: 'internet' is only a rule's destination")
    assert AccessRule.objects.count() == 2 and not Group.objects.exists()


def _admits(policy, packet: bytes) -> bool:
    return PacketFilter(policy, now=0.0).admit(packet)


def test_only_the_sources_of_an_internet_rule_use_the_exit_node_and_the_exit_node_enforces_it(network, nodes):
    """The attack: mac, which no rule lets use the exit node uk, sends internet-bound packets to uk
    anyway (a changed agent ignores its netmap). uk's own map must refuse them; belgium's pass."""
    uk, belgium, mac = nodes["uk"], nodes["belgium"], nodes["mac"]
    exits.advertise_exit_node(uk, approved=True)
    for user in (belgium, mac):
        exits.select_exit_node(user, uk)
    svc.create_rule(network, sources="node:belgium", destinations="internet", protocol="tcp", ports="443")
    be_map, mac_map, uk_map = (netmap(network, n) for n in (belgium, mac, uk))
    assert be_map.node.use_exit == uk.peer_id
    assert {r.prefix for r in be_map.routes if r.via == uk.peer_id} >= {"0.0.0.0/0", "::/0"}
    assert mac_map.node.use_exit is None and not any(r.prefix == "0.0.0.0/0" for r in mac_map.routes)
    assert uk_map.policy.filters
    out = "203.0.113.7"
    assert _admits(uk_map.policy, tcp4(belgium.overlay_ip, out, 40000, 443, SYN))
    assert not _admits(uk_map.policy, tcp4(belgium.overlay_ip, out, 40000, 80, SYN))  # not its port
    assert not _admits(uk_map.policy, tcp4(mac.overlay_ip, out, 40000, 443, SYN))  # the attack
    # the mesh still reaches uk itself (default allow, no rule protects uk), internet rule or not
    assert _admits(uk_map.policy, tcp4(mac.overlay_ip, uk.overlay_ip, 40000, 22, SYN))
    # "internet" is not the mesh: the rule lets belgium reach no member through it
    assert not _admits(uk_map.policy, tcp4(belgium.overlay_ip, "10.10.10.250", 40000, 443, SYN))
    internet = svc.reachability(belgium)["internet"]
    assert internet == {"everything": False, "allowed": [{"protocol": "tcp", "ports": "443"}]}
    assert svc.reachability(mac)["internet"] == {"everything": False, "allowed": []}
    assert svc.reachability(uk)["internet"] is None  # no exit node but itself


def test_without_an_internet_rule_every_member_may_use_an_exit_node_even_one_a_rule_protects(network, nodes):
    """Under the default allow the internet is open until a rule names it, like a node. Before,
    a rule protecting the exit node made it refuse every internet-bound packet, while its members
    still got its default routes."""
    uk, belgium = nodes["uk"], nodes["belgium"]
    exits.advertise_exit_node(uk, approved=True)
    exits.select_exit_node(belgium, uk)
    svc.create_rule(network, sources="node:mac", destinations="node:uk", protocol="tcp", ports="22")
    uk_map, be_map = netmap(network, uk), netmap(network, belgium)
    assert be_map.node.use_exit == uk.peer_id
    assert uk_map.policy.filters  # the rule protects uk's own address
    assert _admits(uk_map.policy, tcp4(belgium.overlay_ip, "203.0.113.7", 40000, 443, SYN))
    assert not _admits(uk_map.policy, tcp4(belgium.overlay_ip, uk.overlay_ip, 40000, 22, SYN))
    assert svc.reachability(belgium)["internet"] == {"everything": True, "allowed": []}


def test_under_deny_a_filtering_user_of_an_exit_node_lets_the_replies_back(network, nodes):
    uk, belgium = nodes["uk"], nodes["belgium"]
    exits.advertise_exit_node(uk, approved=True)
    exits.select_exit_node(belgium, uk)
    svc.set_policy_default(network, "deny")
    assert netmap(network, belgium).node.use_exit is None  # the internet is protected: no rule yet
    svc.create_rule(network, sources="node:belgium", destinations="internet")
    be_map = netmap(network, belgium)
    assert be_map.node.use_exit == uk.peer_id and be_map.policy.filters
    flows = PacketFilter(be_map.policy, now=0.0)
    flows.track(tcp4(belgium.overlay_ip, "203.0.113.7", 40000, 443, SYN))
    assert flows.admit(tcp4("203.0.113.7", belgium.overlay_ip, 443, 40000, SYN | ACK))
    assert not flows.admit(tcp4("203.0.113.8", belgium.overlay_ip, 443, 40001, SYN))  # not asked for
