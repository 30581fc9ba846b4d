"""Discovery records: a node registers its own endpoint; peers of its network look it up.

Besides its endpoint an agent reports UDP candidates (its interface addresses, and its data port
as the public hubs saw it: docs/nat.md#candidates); `clean_candidates` keeps at most
MAX_CANDIDATES, each checked as an endpoint is, and refuses the report otherwise. They are part
of what peers see: a change of them is a change of the record (serial, push, change limit).

A record lives PEER_RECORD_TTL (24 h) after its last registration. Reads treat an older record
as absent (404); `purge_expired_records` (Celery beat) clears them from the rows.
A refresh that changes nothing peers see only moves last_seen/expiry (and the observed source
port, which no netmap carries): no serial bump, no audit row, no announcement, so the 5-minute
refreshes of every node do not churn the netmap.

Addresses are checked by nodeagent.protocol.endpoints (no loopback, unspecified, link-local,
multicast or broadcast address; ports 1..65535); a refused one is audited (`peer.refused`,
folded). Changes are limited per node: at most SHADOWMESH_ENDPOINT_CHANGE_RATE per
ENDPOINT_CHANGE_WINDOW_S (10 minutes); one over the limit is refused with RateLimited (429)
before anything is written (no serial bump, no push) and counted in a folded `peer.refused`
event. An unchanged refresh is never limited.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..constants import PEER_RECORD_TTL
from ..models import Node
from .audit import record_refusal
from .common import bump_serial, node_actor, record_audit
from .errors import Forbidden, InvalidInput, NotFound, RateLimited
from .ratelimit import hit
from .validation import clean_endpoint_ip, clean_port

__all__ = ["ENDPOINT_CHANGE_WINDOW_S", "lookup_peer", "purge_expired_records", "register_peer"]

ENDPOINT_CHANGE_WINDOW_S = 600
_RECORD_FIELDS = ("endpoint_ip", "control_port", "udp_port", "observed_ip", "observed_port")
_SEEN_BY_PEERS = ("endpoint_ip", "control_port", "udp_port", "observed_ip", "advertised_public", "candidates")
_RECORD_DEFAULTS: dict[str, object] = {**dict.fromkeys(_RECORD_FIELDS), "advertised_public": False,
                                        "record_expires_at": None, "candidates": []}
CANDIDATE_SOURCES = ("local", "reflexive")
MAX_CANDIDATES = 15  # with the endpoint itself, the 16 a netmap peer lists at most


def clean_candidates(candidates) -> list[list]:
    """[[source, ip, port], ...] from (source, ip, port) triples: each address and port checked as
    an endpoint's (clean_endpoint_ip, clean_port), duplicates dropped. More than MAX_CANDIDATES, an
    unknown source or an unusable address is an InvalidInput naming it."""
    out, seen = [], set()
    candidates = list(candidates)
    if len(candidates) > MAX_CANDIDATES:
        raise InvalidInput(f"candidates: at most {MAX_CANDIDATES}")
    for i, (source, ip, port) in enumerate(candidates):
        if source not in CANDIDATE_SOURCES:
            raise InvalidInput(f"candidates[{i}].source: must be one of {', '.join(CANDIDATE_SOURCES)}")
        ip = clean_endpoint_ip(ip, f"candidates[{i}]")
        port = clean_port(port, f"candidates[{i}].port")
        if (ip, port) not in seen:
            seen.add((ip, port))
            out.append([source, ip, port])
    return out


def register_peer(
    node: Node,
    *,
    ip: str,
    port: int,
    udp_port: int,
    is_public: bool,
    observed_ip: str | None,
    observed_port: int | None = None,
    agent_version: str | None = None,
    candidates=None,
) -> Node:
    """Store `node`'s own record. The caller has authenticated the node; it cannot name another.
    `agent_version`, when given, is kept as reported (it changes nothing peers see); `candidates`
    (source, ip, port), when given, replace the node's UDP candidates.
    Raises InvalidInput naming the field, Forbidden, or RateLimited (too many changes)."""
    try:
        ip = clean_endpoint_ip(ip, "ip")
        port = clean_port(port, "port")
        udp_port = clean_port(udp_port, "udp_port")
        cands = None if candidates is None else clean_candidates(candidates)
    except InvalidInput as exc:  # a node steering its peers somewhere odd: worth an audit row
        record_refusal(AuditAction.PEER_REGISTER_REFUSED, reason="endpoint refused", actor=node_actor(node),
                       network=node.network, object_type="node", object_id=node.peer_id,
                       source_ip=observed_ip, error=exc.detail)
        raise
    if is_public and not node.is_public:
        raise Forbidden("is_public: this node was not enrolled as a public node")
    now = timezone.now()
    new = {
        "endpoint_ip": ip,
        "control_port": port,
        "udp_port": udp_port,
        "advertised_public": bool(is_public),
        "observed_ip": observed_ip,
        "observed_port": observed_port,
    }
    if cands is not None:
        new["candidates"] = cands
    with transaction.atomic():
        current = Node.objects.select_for_update().get(pk=node.pk)
        if current.status != NodeStatus.ACTIVE:
            raise Forbidden("this node has been revoked")
        was_live = current.record_is_live(now)
        changed = not was_live or any(getattr(current, f) != new[f] for f in _SEEN_BY_PEERS if f in new)
        refused = changed and not hit("endpoint_change", current.peer_id, window_s=ENDPOINT_CHANGE_WINDOW_S)
        if not refused:
            extra = {} if agent_version is None else {"agent_version": agent_version[:64]}
            Node.objects.filter(pk=node.pk).update(
                last_seen=now, record_expires_at=now + PEER_RECORD_TTL, **new, **extra
            )
        if changed and not refused:
            locked = bump_serial(node.network_id)
            record_audit(
                AuditAction.PEER_REGISTERED,
                actor=node_actor(current),
                network=locked,
                obj=current,
                source_ip=observed_ip,
                ip=ip,
                port=port,
                udp_port=udp_port,
            )
            announce(Change(locked.pk, "peer.registered", ALL_NODES, locked.serial))
    if refused:  # audited outside the transaction above, which wrote nothing
        record_refusal(AuditAction.PEER_REGISTER_REFUSED, reason="too many endpoint changes",
                       actor=node_actor(current), network=current.network, object_type="node",
                       object_id=current.peer_id, source_ip=observed_ip, ip=ip, port=port, udp_port=udp_port)
        raise RateLimited("too many endpoint changes for this node; try again in 10 minutes",
                          retry_after=ENDPOINT_CHANGE_WINDOW_S)
    node.refresh_from_db()
    return node


def lookup_peer(requester: Node, peer_id: str) -> Node:
    """The live record of `peer_id` in the requester's network, or NotFound."""
    node = Node.objects.filter(peer_id=peer_id, network_id=requester.network_id).first()
    if node is None or not node.record_is_live(timezone.now()):
        raise NotFound("no live record for this peer")
    return node


def purge_expired_records(now=None) -> int:
    """Clear every expired discovery record; returns how many were cleared."""
    now = now or timezone.now()
    cleared = 0
    network_ids = (
        Node.objects.filter(record_expires_at__lte=now).values_list("network_id", flat=True).distinct()
    )
    for network_id in list(network_ids):
        with transaction.atomic():
            locked = bump_serial(network_id)
            count = Node.objects.filter(network_id=network_id, record_expires_at__lte=now).update(
                **_RECORD_DEFAULTS
            )
            record_audit(AuditAction.PEER_RECORDS_PURGED, actor="system", network=locked, count=count)
            announce(Change(locked.pk, "peer.purged", ALL_NODES, locked.serial))
        cleared += count
    return cleared
