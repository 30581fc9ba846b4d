"""The shared-view computation agrees with a naive per-pair twin on random networks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshadmin.netmap import policy
from meshadmin.netmap.compute import netmaps_for_all, view
from meshadmin.netmap.snapshot import NodeRow, RouteRow, Snapshot
from nodeagent.protocol import netmap as nm


def naive_relay(me: NodeRow, peer: NodeRow, relays: list[NodeRow]) -> str | None:
    """Any relay but the two ends; live endpoint first, then lowest peer id; none towards a relay."""
    if policy.is_relay_candidate(peer):
        return None
    options = sorted((r for r in relays if r.pk not in (me.pk, peer.pk)),
                     key=lambda r: (r.endpoint_ip is None, r.peer_id))
    return options[0].peer_id if options else None


def naive(snap: Snapshot) -> dict[str, nm.NetMap]:
    """Straight from the definitions: every pair asks the policy, nothing is shared."""
    relays = [n for n in snap.nodes if policy.is_relay_candidate(n)]
    out = {}
    for me in snap.nodes:
        if not me.active or me.overlay_ip is None:
            continue
        peers, reach = [], {}
        for n in sorted(snap.nodes, key=lambda n: n.peer_id):
            if not policy.may_reach(me, n):
                continue
            eps = ()
            if n.endpoint_ip and n.control_port and n.udp_port:
                eps = (nm.Endpoint(n.endpoint_ip, n.control_port, n.udp_port),)
                if n.observed_ip and n.observed_ip != n.endpoint_ip:
                    eps += (nm.Endpoint(n.observed_ip, n.control_port, n.udp_port, "observed"),)
            relay = naive_relay(me, n, relays)
            peers.append(nm.Peer(n.peer_id, n.name, n.overlay_ip, n.fingerprint or "0" * 64, eps,
                                 n.is_public, policy.is_relay_candidate(n), relay, bool(eps)))
            reach[n.pk] = n.peer_id
        exits = {r.via_pk for r in snap.routes if r.prefix in ("0.0.0.0/0", "::/0")
                 and any(n.pk == r.via_pk and n.active for n in snap.nodes)}
        chosen = next((n for n in snap.nodes if n.pk == me.use_exit_pk), None)
        use_exit = (chosen.peer_id if chosen is not None and chosen.pk in exits and chosen.pk in reach
                    and policy.may_use_exit(me, chosen) else None)
        out[me.peer_id] = nm.NetMap(
            snap.network, snap.serial,
            nm.SelfInfo(me.peer_id, me.name, me.overlay_ip, snap.prefix_len, me.is_public,
                        policy.is_relay_candidate(me), snap.dns_suffix, me.pk in exits, use_exit),
            tuple(peers),
            tuple(sorted({nm.Route(r.prefix, reach[r.via_pk]) for r in snap.routes if r.via_pk in reach})),
            tuple(sorted(r.peer_id for r in relays if r.pk != me.pk)),
            tuple(sorted(nm.Revocation(n.peer_id, n.fingerprint or "0" * 64)
                         for n in snap.nodes if not n.active)),
        )
    return out


@st.composite
def snapshots(draw):
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
            use_exit_pk=draw(st.sampled_from([None, *range(1, count + 1)]))))
    routes = [RouteRow(prefix=f"192.168.{k}.0/24", via_pk=draw(st.integers(1, count)))
              for k in range(draw(st.integers(0, 3)))]
    routes += [RouteRow(prefix=p, via_pk=draw(st.integers(1, count)))
               for p in draw(st.sampled_from([(), ("0.0.0.0/0",), ("0.0.0.0/0", "::/0")]))]
    return Snapshot(1, "net", draw(st.integers(0, 99)), 24, tuple(nodes), tuple(routes),
                    dns_suffix=draw(st.sampled_from([None, "net.mesh"])))


@settings(max_examples=150, deadline=None)
@given(snapshots())
def test_the_shared_view_matches_the_naive_twin(snap):
    assert netmaps_for_all(view(snap)) == naive(snap)
