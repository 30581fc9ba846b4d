"""The shared-view computation agrees with a naive per-pair twin on random networks, access policies
included (tags, groups, rules, the default, the internet through exit nodes); and what the maps
say agrees with the policy's meaning when each node's agent enforces its own map
(nodeagent/policy/index.py)."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from meshadmin.netmap import policy
from meshadmin.netmap.compute import netmaps_for_all, view
from meshadmin.netmap.snapshot import GroupRow, NodeRow, RouteRow, RuleRow, Snapshot
from nodeagent.policy.index import RuleIndex
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.policy import ALLOW_ALL, check_policy, check_rule


def naive_relay(me: NodeRow, peer: NodeRow, relays: list[NodeRow]) -> str | None:
    """Any relay but the two ends; live endpoint first, then lowest peer id; none towards a relay."""
    if policy.is_relay_candidate(peer):
        return None
    options = sorted((r for r in relays if r.pk not in (me.pk, peer.pk)),
                     key=lambda r: (r.endpoint_ip is None, r.peer_id))
    return options[0].peer_id if options else None


# ----------------------------------------------------------------------------- the policy, naively


def members(snap: Snapshot) -> list[NodeRow]:
    return [n for n in snap.nodes if n.active and n.overlay_ip is not None]


def named(snap: Snapshot, selectors, groups: bool = True) -> set[int]:
    """The member pks a list of selectors names, straight from docs/policy.md."""
    out: set[int] = set()
    for s in selectors:
        kind, _, name = s.partition(":")
        for n in members(snap):
            if s == "*" or (kind == "tag" and name in n.tags) or (kind == "node" and name == n.peer_id):
                out.add(n.pk)
        if kind == "group" and groups:
            for g in snap.groups:
                if g.name == name:
                    out |= named(snap, g.members, groups=False)
    return out


def isolated(snap: Snapshot, b: NodeRow) -> bool:
    return snap.policy_default == "deny" or any(b.pk in named(snap, r.destinations) for r in snap.rules)


def reaches(snap: Snapshot, a: NodeRow, b: NodeRow) -> bool:
    if a.pk == b.pk:
        return False
    return not isolated(snap, b) or any(
        a.pk in named(snap, r.sources) and b.pk in named(snap, r.destinations) for r in snap.rules)


DEFAULTS = ("0.0.0.0/0", "::/0")


def internet_open(snap: Snapshot) -> bool:
    return snap.policy_default == "allow" and not any("internet" in r.destinations for r in snap.rules)


def exit_pks(snap: Snapshot) -> set[int]:
    return {r.via_pk for r in snap.routes if r.prefix in DEFAULTS} & {n.pk for n in members(snap)}


def internet_grants(snap: Snapshot, pks: set[int]) -> list[tuple[set[int], str, tuple]]:
    """(sources among `pks`, protocol, ports) of what may go to the internet."""
    if internet_open(snap):
        return [(pks, "any", ())] if pks else []
    return [(named(snap, r.sources) & pks, r.protocol, r.ports) for r in snap.rules
            if "internet" in r.destinations and named(snap, r.sources) & pks]


def may_use_exit(snap: Snapshot, a: NodeRow, x: NodeRow) -> bool:
    return a.pk != x.pk and x.pk in exit_pks(snap) and bool(internet_grants(snap, {a.pk}))


def internet_prefixes(snap: Snapshot) -> list[str]:
    """Every block outside the overlay network and the subnet routes, by halving until a block
    lies wholly outside or wholly inside them."""
    excluded = {ipaddress.ip_network(f"{n.overlay_ip}/{snap.prefix_len}", strict=False)
                for n in members(snap)}
    excluded |= {ipaddress.ip_network(r.prefix) for r in snap.routes if r.prefix not in DEFAULTS}

    def split(net):
        hits = [e for e in excluded if e.version == net.version and net.overlaps(e)]
        if not hits:
            return [net]
        if any(net.subnet_of(e) for e in hits):
            return []
        return [piece for half in net.subnets() for piece in split(half)]

    return [str(n) for every in DEFAULTS for n in split(ipaddress.ip_network(every))]


def addresses(snap: Snapshot, pks: set[int]) -> list[str]:
    out = []
    for n in members(snap):
        if n.pk in pks:
            out.append(n.overlay_ip)
            out += [r.prefix for r in snap.routes  # an exit node's default routes are not its addresses
                    if r.via_pk == n.pk and r.prefix not in ("0.0.0.0/0", "::/0")]
    return out


def naive_policy(snap: Snapshot, me: NodeRow):
    is_exit = me.pk in exit_pks(snap)
    if not isolated(snap, me) and not (is_exit and not internet_open(snap)):
        return ALLOW_ALL
    rules = []
    others = {n.pk for n in members(snap)} - {me.pk}
    if isolated(snap, me):
        for r in snap.rules:
            srcs, dsts = named(snap, r.sources) - {me.pk}, named(snap, r.destinations) - {me.pk}
            if me.pk in named(snap, r.destinations) and srcs:
                rules.append(check_rule(addresses(snap, srcs), addresses(snap, {me.pk}), r.protocol,
                                        list(r.ports)))
            if me.pk in named(snap, r.sources) and dsts:
                rules.append(check_rule(addresses(snap, {me.pk}), addresses(snap, dsts), r.protocol,
                                        list(r.ports)))
    elif others:  # an exit node filtering for the internet only: the mesh reaches it as before
        rules.append(check_rule(addresses(snap, others), addresses(snap, {me.pk}), "any", []))
    open_ = {n.pk for n in members(snap) if n.pk != me.pk and not isolated(snap, n)}
    if snap.policy_default == "allow" and open_:
        rules.append(check_rule(addresses(snap, {me.pk}), addresses(snap, open_), "any", []))
    if is_exit:
        for srcs, proto, ports in internet_grants(snap, others):
            rules.append(check_rule(addresses(snap, srcs), internet_prefixes(snap), proto, list(ports)))
    if exit_pks(snap) - {me.pk}:
        for _, proto, ports in internet_grants(snap, {me.pk}):
            rules.append(check_rule(addresses(snap, {me.pk}), internet_prefixes(snap), proto, list(ports)))
    return check_policy("deny", rules)


def naive(snap: Snapshot) -> dict[str, nm.NetMap]:
    """Straight from the definitions: every pair asks the policy, nothing is shared."""
    relays = [n for n in snap.nodes if policy.is_relay_candidate(n)]
    out = {}
    for me in snap.nodes:
        if not me.active or me.overlay_ip is None:
            continue
        peers, reach = [], {}
        for n in sorted(members(snap), key=lambda n: n.peer_id):
            if n.pk == me.pk:
                continue
            talks = (reaches(snap, me, n) or reaches(snap, n, me)
                     or may_use_exit(snap, me, n) or may_use_exit(snap, n, me))
            if not (talks or policy.is_relay_candidate(me) or policy.is_relay_candidate(n)):
                continue
            eps = ()
            if n.endpoint_ip and n.control_port and n.udp_port:
                eps = (nm.Endpoint(n.endpoint_ip, n.control_port, n.udp_port),)
                if n.observed_ip and n.observed_ip != n.endpoint_ip:
                    eps += (nm.Endpoint(n.observed_ip, n.control_port, n.udp_port, "observed"),)
            relay = naive_relay(me, n, relays)
            peers.append(nm.Peer(n.peer_id, n.name, n.overlay_ip, n.fingerprint or "0" * 64, eps,
                                 n.is_public, policy.is_relay_candidate(n), relay, bool(eps)))
            if talks:
                reach[n.pk] = n.peer_id
        rows = {n.pk: n for n in snap.nodes}
        exits = {r.via_pk for r in snap.routes if r.prefix in ("0.0.0.0/0", "::/0")
                 and any(n.pk == r.via_pk and n.active for n in snap.nodes)}
        chosen = next((n for n in snap.nodes if n.pk == me.use_exit_pk), None)
        use_exit = (chosen.peer_id if chosen is not None and chosen.pk in exits and chosen.pk in reach
                    and may_use_exit(snap, me, chosen) else None)
        out[me.peer_id] = nm.NetMap(
            snap.network, snap.serial,
            nm.SelfInfo(me.peer_id, me.name, me.overlay_ip, snap.prefix_len, me.is_public,
                        policy.is_relay_candidate(me), snap.dns_suffix, me.pk in exits, use_exit),
            tuple(peers),
            tuple(sorted({nm.Route(r.prefix, reach[r.via_pk]) for r in snap.routes
                          if r.via_pk in reach and (r.prefix not in DEFAULTS
                                                    or may_use_exit(snap, me, rows[r.via_pk]))})),
            tuple(sorted(r.peer_id for r in relays if r.pk != me.pk)),
            tuple(sorted(nm.Revocation(n.peer_id, n.fingerprint or "0" * 64)
                         for n in snap.nodes if not n.active)),
            naive_policy(snap, me),
        )
    return out


TAGS = ["web", "db", "ops"]


@st.composite
def snapshots(draw, with_policy: bool = True):
    count = draw(st.integers(1, 9))
    nodes = []
    for i in range(count):
        active = draw(st.booleans()) or i == 0
        live = draw(st.booleans())
        nodes.append(NodeRow(
            pk=i + 1, peer_id=f"{draw(st.integers(0, 2**40)):040x}"[:-2] + f"{i:02x}", name=f"n{i}",
            overlay_ip=f"10.0.0.{i + 1}" if active else None, is_public=draw(st.booleans()),
            is_relay=draw(st.booleans()), active=active, fingerprint=draw(st.sampled_from(["", "ab" * 32])),
            endpoint_ip="198.18.0.9" if live else None,
            observed_ip=draw(st.sampled_from([None, "198.18.0.9", "198.19.1.1"])) if live else None,
            control_port=8443 if live else None, udp_port=9443 if live else None,
            use_exit_pk=draw(st.sampled_from([None, *range(1, count + 1)])),
            tags=tuple(sorted(draw(st.sets(st.sampled_from(TAGS), max_size=2))))))
    routes = [RouteRow(prefix=f"192.168.{k}.0/24", via_pk=draw(st.integers(1, count)))
              for k in range(draw(st.integers(0, 3)))]
    routes += [RouteRow(prefix=p, via_pk=draw(st.integers(1, count)))
               for p in draw(st.sampled_from([(), ("0.0.0.0/0",), ("0.0.0.0/0", "::/0")]))]
    dns_suffix = draw(st.sampled_from([None, "net.mesh"]))
    if not with_policy:
        return Snapshot(1, "net", draw(st.integers(0, 99)), 24, tuple(nodes), tuple(routes),
                        dns_suffix=dns_suffix)
    selectors = ["*", *(f"tag:{t}" for t in TAGS), *(f"node:{n.peer_id}" for n in nodes),
                 "node:" + "f" * 40, "tag:unused"]
    groups = tuple(GroupRow(name, tuple(draw(st.lists(st.sampled_from(selectors), max_size=3))))
                   for name in draw(st.sets(st.sampled_from(["g1", "g2"]))))
    selectors += ["group:g1", "group:g2"]
    rules = []
    for k in range(draw(st.integers(0, 4))):
        proto = draw(st.sampled_from(["any", "tcp", "udp", "icmp"]))
        ports = ()
        if proto in ("tcp", "udp"):
            ports = draw(st.sampled_from([(), ((22, 22),), ((80, 80), (8000, 8100))]))
        ends = [tuple(draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3)))
                for choices in (selectors, [*selectors, "internet", "internet"])]
        rules.append(RuleRow(k + 1, k + 1, ends[0], ends[1], proto, ports))
    default = draw(st.sampled_from(["allow", "deny"]))
    return Snapshot(1, "net", draw(st.integers(0, 99)), 24, tuple(nodes), tuple(routes),
                    dns_suffix=dns_suffix, policy_default=default, groups=groups, rules=tuple(rules))


@settings(max_examples=200, deadline=None)
@given(snapshots())
def test_the_shared_view_matches_the_naive_twin(snap):
    assert netmaps_for_all(view(snap)) == naive(snap)


@settings(max_examples=100, deadline=None)
@given(snapshots(with_policy=False))
def test_without_rules_every_member_reaches_every_other_and_nothing_is_filtered(snap):
    maps = netmaps_for_all(view(snap))
    assert view(snap).access.full_mesh
    for pid, m in maps.items():
        assert m.policy == ALLOW_ALL
        assert {p.peer_id for p in m.peers} == {n.peer_id for n in members(snap)} - {pid}


PORTS = {"tcp": 6, "udp": 17, "icmp": 1}


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.sampled_from(["tcp", "udp", "icmp"]), st.sampled_from([22, 80, 443, 8050]))
def test_what_each_agent_enforces_is_what_the_policy_means(snap, proto, port):
    """Enforced at the receiver with only its own map, a packet from a's overlay address to b's
    passes exactly when the policy lets a reach b with that protocol and port; and whenever it
    may, b is in a's map (a can send it) and a in b's (b can answer)."""
    maps = netmaps_for_all(view(snap))
    by_pk = {n.pk: n for n in members(snap)}
    dport = port if proto != "icmp" else None
    for a in by_pk.values():
        for b in by_pk.values():
            if a.pk == b.pk:
                continue
            bmap = maps[b.peer_id]
            if bmap.policy.filters:
                passes = RuleIndex.build(bmap.policy.rules).allows(
                    ipaddress.ip_address(a.overlay_ip).packed, ipaddress.ip_address(b.overlay_ip).packed,
                    PORTS[proto], dport)
            else:
                passes = True
            meant = not isolated(snap, b) or any(
                a.pk in named(snap, r.sources) and b.pk in named(snap, r.destinations)
                and r.protocol in ("any", proto)
                and (not r.ports or any(lo <= port <= hi for lo, hi in r.ports))
                for r in snap.rules)
            assert passes == meant, (a.name, b.name, proto, port)
            if meant:
                assert maps[a.peer_id].peer(b.peer_id) is not None and bmap.peer(a.peer_id) is not None


INTERNET_HOST = ipaddress.ip_address("203.0.113.7").packed  # outside the overlay and every subnet route


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.sampled_from(["tcp", "udp", "icmp"]), st.sampled_from([22, 80, 443, 8050]))
def test_what_each_exit_node_forwards_is_what_the_policy_means(snap, proto, port):
    """Enforced at the exit node with only its own map, a packet from a's overlay address to an
    internet host passes exactly when the policy lets a use the internet with that protocol and
    port; and whenever it may, a's map routes the internet through that exit node, each is in the
    other's map, and a's own map lets it start the flow (so the replies come back)."""
    maps = netmaps_for_all(view(snap))
    by_pk = {n.pk: n for n in members(snap)}
    dport = port if proto != "icmp" else None
    for x in (by_pk[pk] for pk in exit_pks(snap)):
        xmap = maps[x.peer_id]
        for a in by_pk.values():
            if a.pk == x.pk:
                continue
            src = ipaddress.ip_address(a.overlay_ip).packed
            if xmap.policy.filters:
                passes = RuleIndex.build(xmap.policy.rules).allows(src, INTERNET_HOST, PORTS[proto], dport)
            else:
                passes = True
            meant = any(p in ("any", proto) and (not ports or any(lo <= port <= hi for lo, hi in ports))
                        for _, p, ports in internet_grants(snap, {a.pk}))
            assert passes == meant, (a.name, x.name, proto, port)
            if meant:
                amap = maps[a.peer_id]
                assert xmap.peer(a.peer_id) is not None and amap.peer(x.peer_id) is not None
                assert any(r.via == x.peer_id and r.prefix in DEFAULTS for r in amap.routes)
                if amap.policy.filters:
                    assert RuleIndex.build(amap.policy.rules).allows(src, INTERNET_HOST, PORTS[proto], dport)
