"""Gather everything a netmap needs from the database into frozen rows, in a pinned number of queries.

Queries (pinned by tests/meshadmin/netmap/test_snapshot_queries.py): the network (with its serial,
read first so a map never claims a newer serial than its data, its DNS suffix and its policy
default), its nodes (with the exit node each one was given), its approved routes (exit nodes'
default routes among them), the tags its nodes carry, its groups, its access rules. Nothing else
touches the database; policy.py and compute.py work on the returned Snapshot only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from meshadmin.mesh.choices import NodeStatus
from meshadmin.mesh.models import AccessRule, Group, Network, Node, Route, Tag
from nodeagent.protocol.dnsname import default_suffix

__all__ = ["GroupRow", "NodeRow", "RouteRow", "RuleRow", "Snapshot", "load"]

QUERY_COUNT = 6


@dataclass(frozen=True, slots=True)
class NodeRow:
    pk: int
    peer_id: str
    name: str
    overlay_ip: str | None
    is_public: bool
    is_relay: bool
    active: bool
    fingerprint: str  # hex SHA-256 of the certificate's signed part ("" when unparsable)
    endpoint_ip: str | None = None  # only set while the discovery record is live
    observed_ip: str | None = None
    control_port: int | None = None
    udp_port: int | None = None
    last_seen: datetime | None = None
    candidates: tuple[tuple[str, str, int], ...] = ()  # (source, ip, udp port), validated when stored
    use_exit_pk: int | None = None  # the exit node an operator chose for this node
    tags: tuple[str, ...] = ()  # sorted names


@dataclass(frozen=True, slots=True)
class RouteRow:
    prefix: str
    via_pk: int


@dataclass(frozen=True, slots=True)
class GroupRow:
    name: str
    members: tuple[str, ...]  # selectors (meshadmin/mesh/models/policies.py)


@dataclass(frozen=True, slots=True)
class RuleRow:
    pk: int
    position: int
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    protocol: str = "any"
    ports: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    network_id: int
    network: str
    serial: int
    prefix_len: int
    nodes: tuple[NodeRow, ...]
    routes: tuple[RouteRow, ...]
    ca_public_key: bytes = b""  # the network CA's: whoever sends these maps signs with its key
    dns_suffix: str | None = None  # nodes answer to <name>.<dns_suffix>; None: no DNS names
    policy_default: str = "allow"  # mesh.choices.PolicyDefault
    groups: tuple[GroupRow, ...] = ()
    rules: tuple[RuleRow, ...] = ()  # by position

    def node(self, key: int | str) -> NodeRow | None:
        for n in self.nodes:
            if n.pk == key or n.peer_id == key:
                return n
        return None


def load(network: Network | int, now: datetime | None = None) -> Snapshot:
    now = now or timezone.now()
    network_id = network.pk if isinstance(network, Network) else network
    net = Network.objects.values("pk", "name", "serial", "overlay_cidr", "ca_public_key",
                                 "dns_suffix", "policy_default").get(pk=network_id)
    rows = list(Node.objects.filter(network_id=network_id).order_by("peer_id").values(
        "pk", "peer_id", "name", "overlay_ip", "is_public", "is_relay", "status", "certificate_fingerprint",
        "endpoint_ip", "observed_ip", "control_port", "udp_port", "last_seen", "record_expires_at",
        "candidates", "use_exit_id"))
    tags: dict[int, list[str]] = {}
    for node_id, name in (Tag.nodes.through.objects.filter(tag__network_id=network_id)
                          .values_list("node_id", "tag__name")):
        tags.setdefault(node_id, []).append(name)
    nodes = []
    for r in rows:
        live = r["status"] == NodeStatus.ACTIVE and r["record_expires_at"] is not None \
            and r["record_expires_at"] > now
        nodes.append(NodeRow(
            pk=r["pk"], peer_id=r["peer_id"], name=r["name"], overlay_ip=r["overlay_ip"],
            is_public=r["is_public"], is_relay=r["is_relay"], active=r["status"] == NodeStatus.ACTIVE,
            fingerprint=r["certificate_fingerprint"],
            endpoint_ip=r["endpoint_ip"] if live else None, observed_ip=r["observed_ip"] if live else None,
            control_port=r["control_port"] if live else None, udp_port=r["udp_port"] if live else None,
            last_seen=r["last_seen"], use_exit_pk=r["use_exit_id"],
            tags=tuple(sorted(tags.get(r["pk"], ()))),
            candidates=tuple((s, ip, p) for s, ip, p in (r["candidates"] or ())) if live else ()))
    routes = tuple(RouteRow(prefix=r["prefix"], via_pk=r["via_id"]) for r in
                   Route.objects.filter(network_id=network_id, approved=True)
                   .order_by("prefix", "via_id").values("prefix", "via_id"))
    groups = tuple(GroupRow(name=g["name"], members=tuple(g["members"])) for g in
                   Group.objects.filter(network_id=network_id).order_by("name").values("name", "members"))
    rules = tuple(RuleRow(pk=r["pk"], position=r["position"], sources=tuple(r["sources"]),
                          destinations=tuple(r["destinations"]), protocol=r["protocol"],
                          ports=tuple((lo, hi) for lo, hi in r["ports"]))
                  for r in AccessRule.objects.filter(network_id=network_id).order_by("position", "pk")
                  .values("pk", "position", "sources", "destinations", "protocol", "ports"))
    return Snapshot(network_id=net["pk"], network=net["name"], serial=net["serial"],
                    prefix_len=ipaddress.ip_network(net["overlay_cidr"]).prefixlen,
                    nodes=tuple(nodes), routes=routes, ca_public_key=bytes(net["ca_public_key"]),
                    dns_suffix=net["dns_suffix"] or default_suffix(net["name"]),
                    policy_default=net["policy_default"], groups=groups, rules=rules)
