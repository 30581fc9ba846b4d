"""delta_for (one change set shared by all ordinary members) gives exactly the new map when applied
to the old one, on random pairs of snapshots (exit nodes appearing and going, exit nodes chosen, the
DNS suffix changed: the node's own entry travels in the delta); and it is taken for ordinary nodes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st

from meshadmin.netmap.compute import changes, delta_for, view
from meshadmin.netmap.snapshot import NodeRow, RouteRow, RuleRow, Snapshot
from nodeagent.protocol import netmap as nm


def row(i: int, **kw) -> NodeRow:
    base = dict(pk=i, peer_id=f"{i:040x}", name=f"n{i}", overlay_ip=f"10.0.0.{i}", is_public=False,
                is_relay=False, active=True, fingerprint="ab" * 32)
    base.update(kw)
    return NodeRow(**base)


@st.composite
def node(draw, i: int) -> NodeRow:
    active = draw(st.booleans()) or draw(st.booleans())
    live = draw(st.booleans()) and draw(st.booleans())
    name = draw(st.sampled_from([f"n{i}", f"n{i}", f"m{i}"]))
    return row(i, name=name, overlay_ip=f"10.0.0.{i}" if active else None,
               is_public=draw(st.booleans()) and draw(st.booleans()), active=active,
               endpoint_ip=draw(st.sampled_from(["198.18.0.1", "198.18.0.2"])) if live else None,
               control_port=8443 if live else None, udp_port=9443 if live else None,
               use_exit_pk=draw(st.sampled_from([None, None, 1, 2, 3])))


@st.composite
def snapshot(draw, serial: int) -> Snapshot:
    ids = draw(st.sets(st.integers(1, 12), min_size=1, max_size=10))
    nodes = tuple(draw(node(i)) for i in sorted(ids))
    routes = tuple(RouteRow(f"192.168.{k}.0/24", draw(st.sampled_from(sorted(ids))))
                   for k in range(draw(st.integers(0, 3))))
    # exit nodes: default routes through some of them (an exit's own map changes: is_exit)
    exits = draw(st.sets(st.sampled_from(sorted(ids)), max_size=2))
    routes += tuple(RouteRow(prefix, pk) for pk in sorted(exits)
                    for prefix in draw(st.sampled_from([("0.0.0.0/0",), ("0.0.0.0/0", "::/0")])))
    return Snapshot(1, "net", serial, draw(st.sampled_from([24, 24, 16])), nodes, routes,
                    dns_suffix=draw(st.sampled_from(["net.mesh", "net.mesh", "corp.example", None])))


LISTS = (b"SMD1\x02list one", b"SMD1\x02list two")  # stand-ins for the CA's revocation list


@st.composite
def lists(draw) -> tuple[bytes | None, bytes | None]:
    """The CA's revocation list of two views: a list is replaced, never taken away."""
    old = draw(st.sampled_from([None, *LISTS]))
    return old, draw(st.sampled_from(LISTS if old else [None, *LISTS]))


@settings(max_examples=300, deadline=None)
@given(snapshot(5), snapshot(6), lists())
def test_the_shared_delta_applied_to_the_old_map_gives_the_new_map(old_snap, new_snap, rl):
    old, new = view(old_snap).with_revocation_list(rl[0]), view(new_snap).with_revocation_list(rl[1])
    ch = changes(old, new)
    for me in new.members:
        delta = delta_for(old, new, ch, me.peer_id)
        if delta is None:
            continue
        # hypothesis --hypothesis-show-statistics shows how often
        event("shared delta checked, for a relay" if me.is_public else "shared delta checked")
        assert nm.apply_delta(old.netmap_for(me.peer_id), delta) == new.netmap_for(me.peer_id)


def _public(snap: Snapshot, ids: set[int]) -> Snapshot:
    return replace(snap, nodes=tuple(replace(n, is_public=True) if n.pk in ids else n for n in snap.nodes))


@settings(max_examples=300, deadline=None)
@given(snapshot(5), lists(), st.sets(st.integers(1, 12), min_size=1, max_size=4), st.data())
def test_the_relays_delta_applied_to_its_old_map_gives_its_new_map(old_snap, rl, hubs, data):
    """As above with more relays, and the new view a few changes away from the old one (a node
    or two redrawn, added or gone; a relay's endpoint coming or going reorders the ranking): every
    relay that gets a shared delta gets exactly its new map from it."""
    old_snap = _public(old_snap, hubs)
    nodes = {n.pk: n for n in old_snap.nodes}
    for i in data.draw(st.sets(st.integers(1, 12), max_size=3)):
        if i in nodes and data.draw(st.booleans()):
            del nodes[i]
        else:
            nodes[i] = data.draw(node(i))
    new_snap = _public(replace(old_snap, serial=6, nodes=tuple(nodes[i] for i in sorted(nodes))), hubs)
    old = view(old_snap).with_revocation_list(rl[0])
    new = view(new_snap).with_revocation_list(rl[1])
    ch = changes(old, new)
    for me in new.members:
        delta = delta_for(old, new, ch, me.peer_id)
        if delta is None or not me.is_public:
            continue
        event("a relay's shared delta checked")
        assert nm.apply_delta(old.netmap_for(me.peer_id), delta) == new.netmap_for(me.peer_id)


def test_an_ordinary_node_gets_the_shared_delta_and_a_relay_it_with_its_own_hints():
    hub = row(1, is_public=True, endpoint_ip="198.18.0.1", control_port=8443, udp_port=9443)
    hub2 = row(5, is_public=True, endpoint_ip="198.18.0.5", control_port=8443, udp_port=9443)
    old = view(Snapshot(1, "net", 5, 24, (hub, row(2), row(3), hub2), ()))
    new = view(Snapshot(1, "net", 6, 24, (hub, replace(row(2), endpoint_ip="198.18.0.2", control_port=1,
                                                       udp_port=2), row(3), row(4), hub2), ()))
    ch = changes(old, new)
    delta = delta_for(old, new, ch, row(3).peer_id)
    assert delta is not None
    assert [p.peer_id for p in delta.upsert] == [row(2).peer_id, row(4).peer_id]
    assert {p.relay for p in delta.upsert} == {hub.peer_id}  # the first relay, for everyone else
    assert nm.apply_delta(old.netmap_for(row(3).peer_id), delta) == new.netmap_for(row(3).peer_id)
    # the first relay: the same two entries, each with the second relay as its hint
    to_hub = delta_for(old, new, ch, hub.peer_id)
    assert to_hub is not None
    assert [(p.peer_id, p.relay) for p in to_hub.upsert] == [(row(2).peer_id, hub2.peer_id),
                                                            (row(4).peer_id, hub2.peer_id)]
    assert nm.apply_delta(old.netmap_for(hub.peer_id), to_hub) == new.netmap_for(hub.peer_id)
    to_hub2 = delta_for(old, new, ch, hub2.peer_id)
    assert to_hub2 is not None and to_hub2.upsert == delta.upsert
    assert delta_for(old, new, ch, row(2).peer_id) is None     # its own entry changed
    assert delta_for(old, new, ch, row(4).peer_id) is None     # not in the old map at all


def test_a_relay_takes_the_general_path_when_the_relay_ranking_changes():
    """The first relay's map names the second choice in every entry; when the second choice changes
    (here a relay ranked higher appears: its endpoint is live), entries that did not change read
    differently to that relay, so no shared change set describes its delta."""
    hub = row(1, is_public=True, endpoint_ip="198.18.0.1", control_port=8443, udp_port=9443)
    slow = row(3, is_public=True)  # no live endpoint: ranked after live relays
    old = view(Snapshot(1, "net", 5, 24, (hub, row(2), slow), ()))
    new = view(Snapshot(1, "net", 6, 24, (hub, row(2), replace(slow, endpoint_ip="198.18.0.3", control_port=1,
                                                               udp_port=2)), ()))
    assert old.relay_order == new.relay_order == (hub.peer_id, slow.peer_id)
    live = view(Snapshot(1, "net", 6, 24, (hub, row(2), slow, row(4, is_public=True, endpoint_ip="198.18.0.4",
                                                                  control_port=1, udp_port=2)), ()))
    assert live.relay_order == (hub.peer_id, row(4).peer_id)
    ch = changes(old, live)
    assert row(2).pk not in ch.upsert  # its entry (hint: the first relay) is the same
    assert old.netmap_for(hub.peer_id).peers[0].relay == slow.peer_id
    assert live.netmap_for(hub.peer_id).peers[0].relay == row(4).peer_id
    assert delta_for(old, live, ch, hub.peer_id) is None
    assert delta_for(old, live, ch, row(2).peer_id) is not None


def test_a_node_learns_from_the_shared_delta_that_it_became_an_exit_node_and_who_uses_one():
    exit_node, client = row(1), row(2, use_exit_pk=1)
    old = view(Snapshot(1, "net", 5, 24, (exit_node, client, row(3)), (), dns_suffix="net.mesh"))
    routes = (RouteRow("0.0.0.0/0", 1), RouteRow("::/0", 1))
    new = view(Snapshot(1, "net", 6, 24, (exit_node, client, row(3)), routes, dns_suffix="corp.example"))
    ch = changes(old, new)
    to_exit = delta_for(old, new, ch, exit_node.peer_id)
    assert to_exit is not None and to_exit.node is not None and to_exit.node.is_exit
    to_client = delta_for(old, new, ch, client.peer_id)
    assert to_client is not None and to_client.node is not None
    assert to_client.node.use_exit == exit_node.peer_id and to_client.node.dns_suffix == "corp.example"
    assert {r.prefix for r in to_client.routes} == {"0.0.0.0/0", "::/0"}
    assert old.netmap_for(client.peer_id).node.use_exit is None  # chosen, but not an exit node yet
@st.composite
def policy_of(draw, snap: Snapshot) -> Snapshot:
    """`snap` with a random access policy over its nodes (tags, a rule or two, the default)."""
    tagged = tuple(replace(n, tags=("db",)) if draw(st.booleans()) else n for n in snap.nodes)
    sources = st.sampled_from(["*", "tag:db", f"node:{tagged[0].peer_id}"])
    rules = tuple(RuleRow(k + 1, k + 1, (draw(sources),), (draw(st.sampled_from(["*", "tag:db"])),), "tcp",
                          ((22, 22),)) for k in range(draw(st.integers(0, 2))))
    return replace(snap, nodes=tagged, rules=rules, policy_default=draw(st.sampled_from(["allow", "deny"])))


@settings(max_examples=200, deadline=None)
@given(snapshot(5), snapshot(6), st.data())
def test_with_an_access_policy_every_member_still_gets_exactly_its_new_map(old_snap, new_snap, data):
    """What the consumer sends (the shared delta when delta_for gives one, else the diff of the two
    maps) turns each member's old map into its new one; the shared delta is only ever taken while
    both views are the full mesh."""
    old = view(data.draw(policy_of(old_snap)) if data.draw(st.booleans()) else old_snap)
    new = view(data.draw(policy_of(new_snap)) if data.draw(st.booleans()) else new_snap)
    ch = changes(old, new)
    for me in new.members:
        if me.pk not in old.peers:
            continue
        delta = delta_for(old, new, ch, me.peer_id)
        if delta is not None:
            assert old.access.full_mesh and new.access.full_mesh
        else:
            delta = nm.diff(old.netmap_for(me.peer_id), new.netmap_for(me.peer_id))
        assert nm.apply_delta(old.netmap_for(me.peer_id), delta) == new.netmap_for(me.peer_id)


def test_a_rule_ends_the_shared_delta_and_its_maps_differ_per_node():
    nodes = (row(1), row(2, tags=("db",)), row(3))
    rule = RuleRow(1, 1, (f"node:{row(1).peer_id}",), ("tag:db",), "tcp", ((5432, 5432),))
    open_ = view(Snapshot(1, "net", 5, 24, nodes, ()))
    ruled = view(Snapshot(1, "net", 6, 24, nodes, (), rules=(rule,)))
    assert open_.access.full_mesh and not ruled.access.full_mesh
    ch = changes(open_, ruled)
    assert all(delta_for(open_, ruled, ch, n.peer_id) is None for n in ruled.members)
    # default allow: the rule isolates db only; db may still start anything towards 1 and 3
    db = ruled.netmap_for(row(2).peer_id)
    assert db.policy.filters and [p.peer_id for p in db.peers] == [row(1).peer_id, row(3).peer_id]
    assert not ruled.netmap_for(row(3).peer_id).policy.filters
    # default deny: only the rule's pair talks; 3 has no peer at all
    closed = view(Snapshot(1, "net", 7, 24, nodes, (), policy_default="deny", rules=(rule,)))
    assert [p.peer_id for p in closed.netmap_for(row(2).peer_id).peers] == [row(1).peer_id]
    assert [p.peer_id for p in closed.netmap_for(row(1).peer_id).peers] == [row(2).peer_id]
    assert closed.netmap_for(row(3).peer_id).peers == ()
    assert closed.netmap_for(row(3).peer_id).policy.filters
