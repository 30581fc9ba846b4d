"""Netmap diff plans: applying the actions to a model reaches the new map, and every intermediate
state is consistent (no route or relay pointing at a missing peer, revoked peers gone first)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeagent.protocol.netmap import Endpoint, NetMap, Peer, Revocation, Route, SelfInfo, is_exit_route
from nodeagent.routing.plan import (
    AddPeer,
    AddRoute,
    RemovePeer,
    RemoveRoute,
    SetSelf,
    UpdatePeer,
    effective,
    plan,
    routing_table,
)
from nodeagent.routing.table import Hop

ME = "0" * 40
UK, BE, SL, MAC = "1" * 40, "2" * 40, "3" * 40, "4" * 40
SELF = SelfInfo(ME, "me", "10.10.10.2", 24)


def peer(pid, ip, relay=None, fp="a" * 64, port=9443):
    return Peer(pid, pid[:4], ip, fp, endpoints=(Endpoint("198.18.0.9", 8443, port),), relay=relay)


def netmap(peers=(), routes=(), revoked=(), node=SELF, serial=1):
    return NetMap("lab", serial, node, tuple(peers), tuple(routes), (), tuple(revoked))


SEED = netmap(
    [peer(UK, "10.10.10.3"), peer(BE, "10.10.10.5"), peer(SL, "10.10.10.6", relay=UK)],
    [Route("192.168.8.0/24", BE)],
)


def test_first_map_sets_self_adds_relays_first_then_routes():
    actions = plan(None, SEED)
    assert actions[0] == SetSelf(SELF)
    added = [a.peer.peer_id for a in actions if isinstance(a, AddPeer)]
    assert set(added) == {UK, BE, SL} and added.index(UK) < added.index(SL)
    assert actions[-1] == AddRoute(Route("192.168.8.0/24", BE))


def test_same_map_needs_nothing():
    assert plan(SEED, SEED) == []


def test_revoked_peer_is_removed_first_with_its_routes_even_if_still_listed():
    new = netmap(SEED.peers, SEED.routes, revoked=[Revocation(BE, "f" * 64)], serial=2)
    actions = plan(SEED, new)
    assert actions == [RemoveRoute(Route("192.168.8.0/24", BE)), RemovePeer(BE, revoked=True)]


def test_a_certificate_for_a_new_address_resets_sessions_and_a_changed_endpoint_does_not():
    new = netmap([peer(UK, "10.10.10.13", fp="b" * 64), peer(BE, "10.10.10.5", port=9999),
                  peer(SL, "10.10.10.6", relay=UK)], SEED.routes, serial=2)
    updates = {a.new.peer_id: a.reset_sessions for a in plan(SEED, new) if isinstance(a, UpdatePeer)}
    assert updates == {UK: True, BE: False}


def test_a_renewed_certificate_keeps_live_sessions_and_an_identity_change_does_not():
    # a renewal: same peer id (so the same key: the id is its hash) and overlay address, only the
    # validity differs, so the fingerprint (a hash of the signed part) changes. Sessions were
    # authenticated under the old certificate of the same identity: they stay up, and the next
    # handshake presents the new one. Before, every renewal reset the node's sessions at every peer.
    renewed = netmap([peer(UK, "10.10.10.3", fp="b" * 64), *SEED.peers[1:]], SEED.routes, serial=2)
    assert plan(SEED, renewed) == [UpdatePeer(SEED.peers[0], renewed.peers[0], reset_sessions=False)]
    # a new address under the same key is another identity for cryptokey routing: reset
    moved = netmap([peer(UK, "10.10.10.13", fp="b" * 64), *SEED.peers[1:]], SEED.routes, serial=2)
    assert plan(SEED, moved) == [UpdatePeer(SEED.peers[0], moved.peers[0], reset_sessions=True)]
    # a new key is a new peer id: the old peer goes (sessions torn down, keys wiped), the new one comes
    rekeyed = netmap([peer(MAC, "10.10.10.3", fp="b" * 64), *SEED.peers[1:]], SEED.routes, serial=2)
    actions = plan(SEED, rekeyed)
    assert RemovePeer(UK) in actions and AddPeer(rekeyed.peer(MAC)) in actions


def test_route_moving_to_another_peer_is_removed_then_added():
    new = netmap(SEED.peers, [Route("192.168.8.0/24", UK)], serial=2)
    moved = [RemoveRoute(Route("192.168.8.0/24", BE)), AddRoute(Route("192.168.8.0/24", UK))]
    assert plan(SEED, new) == moved


def test_routes_via_unknown_peers_and_ourselves_are_ignored():
    m = netmap([peer(UK, "10.10.10.3"), peer(ME, "10.10.10.2")], [Route("10.1.0.0/16", MAC)])
    peers, routes = effective(m)
    assert set(peers) == {UK} and routes == set()


def test_routing_table_follows_the_map():
    t = routing_table(SEED)
    assert t.lookup("10.10.10.6") == Hop(SL, UK)
    assert t.lookup("10.10.10.5") == Hop(BE)
    assert t.lookup("192.168.8.77") == Hop(BE)
    assert t.lookup("10.10.10.99") is None


def test_routing_table_sends_routes_behind_a_relayed_peer_through_its_relay():
    m = netmap(SEED.peers, [Route("172.16.0.0/12", SL)])
    assert routing_table(m).lookup("172.16.1.1") == Hop(SL, UK)


# --- model-based check ---------------------------------------------------------------------------

IDS = [c * 40 for c in "123456"]


@st.composite
def netmaps(draw):
    chosen = draw(st.lists(st.sampled_from(IDS), unique=True, max_size=6))
    peers = []
    for k, pid in enumerate(chosen):
        # a relay is a peer listed earlier, so relays never form a cycle (a valid map)
        relay = draw(st.one_of(st.none(), st.sampled_from(chosen[:k]))) if k else None
        peers.append(peer(pid, f"10.10.10.{10 + IDS.index(pid)}", relay=relay,
                          fp=draw(st.sampled_from(["a" * 64, "b" * 64])), port=draw(st.sampled_from([1, 2]))))
    routes = draw(st.lists(st.builds(Route, st.sampled_from(["10.1.0.0/16", "10.2.0.0/16", "0.0.0.0/0"]),
                                     st.sampled_from(IDS)), unique_by=lambda r: r.prefix, max_size=3))
    revoked = draw(st.lists(st.sampled_from(IDS), unique=True, max_size=2))
    node = draw(st.sampled_from([SELF, SelfInfo(ME, "me", "10.10.10.9", 24)]))
    return netmap(peers, routes, [Revocation(r, "c" * 64) for r in revoked], node=node)


def apply(state, action):
    node, peers, routes = state
    if isinstance(action, SetSelf):
        node = action.node
    elif isinstance(action, RemoveRoute):
        routes.remove(action.route)
    elif isinstance(action, RemovePeer):
        assert not any(r.via == action.peer_id for r in routes), "route left pointing at a removed peer"
        del peers[action.peer_id]
    elif isinstance(action, UpdatePeer):
        assert peers[action.new.peer_id] == action.old
        peers[action.new.peer_id] = action.new
    elif isinstance(action, AddPeer):
        assert action.peer.peer_id not in peers
        peers[action.peer.peer_id] = action.peer
    elif isinstance(action, AddRoute):
        assert action.route.via in peers, "route added before its peer"
        routes.add(action.route)
    return node, peers, routes


@settings(max_examples=200)
@given(netmaps(), netmaps())
def test_applying_the_plan_reaches_the_new_map_through_consistent_states(old, new):
    peers, routes = effective(old)
    state = (old.node, dict(peers), set(routes))
    actions = plan(old, new)
    revoked = {r.peer_id for r in new.revoked}
    seen_non_revoked_removal = False
    for action in actions:
        state = apply(state, action)
        if isinstance(action, RemovePeer):
            assert not (action.revoked and seen_non_revoked_removal), "revoked peers go first"
            seen_non_revoked_removal |= not action.revoked
        added = action.peer if isinstance(action, AddPeer) else getattr(action, "new", None)
        if added is not None and added.relay in {p.peer_id for p in new.peers}:
            relay = added.relay
            assert relay in state[1] or relay in revoked or relay == ME, "peer added before its relay"
    want_peers, want_routes = effective(new)
    assert state == (new.node, want_peers, want_routes)
    assert not revoked & set(state[1])
    assert plan(new, new) == []


@settings(max_examples=100)
@given(netmaps(), st.booleans())
def test_routing_table_matches_the_effective_map(m, use_exit):
    """Every effective route is in the table, except an exit node's default route (0.0.0.0/0):
    that one only when this node uses that exit node (`exit_route`)."""
    peers, routes = effective(m)
    exits = sorted(r for r in routes if is_exit_route(r))
    exit_route = exits[0] if use_exit and exits else None
    try:
        table = routing_table(m, exit_route)
    except ValueError:
        return  # a route colliding with a host route of another peer: refused as a conflict
    for p in peers.values():
        assert table.lookup(p.overlay_ip) == Hop(p.peer_id, p.relay)
    for r in routes:
        hop = table.lookup(ipaddress.ip_network(r.prefix).network_address + 7)
        if not is_exit_route(r):
            assert hop is not None
        elif r == exit_route:
            assert hop == Hop(r.via, peers[r.via].relay)
        else:
            assert hop is None


@pytest.mark.parametrize("old", [None, SEED])
def test_plan_is_deterministic(old):
    assert plan(old, SEED) == plan(old, SEED)
