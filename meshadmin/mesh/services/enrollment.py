"""Enrollment: spend a token, allocate an overlay IP, issue the node's certificate.

The token is `<secret>.<CA fingerprint>` (or, made before fingerprints, the secret alone): it is
looked up by the hash of its secret; a fingerprint that is not this network's CA's is refused
before anything is spent (the agent would refuse the answer anyway).

The token is consumed by a conditional UPDATE (uses_left > 0, not revoked, not expired) in the
same transaction that creates the node; if anything later fails (pool full, key already
enrolled) the transaction rolls back and the use is given back. Refusals are audited outside
the rolled-back transaction so the audit row survives (repeated ones from one address folded
into one event with a count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from meshadmin.metrics import events
from nodeagent.protocol.enroll_token import TokenFormatError, fingerprint_matches, parse_token
from nodeagent.protocol.identity import peer_id as compute_peer_id

from ..addressing import PoolExhausted, next_free_address
from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..models import EnrollmentToken, Node
from ..pki import issue_node_certificate
from ..secrets import hash_secret
from .audit import record_refusal
from .certificates import certificate_lifetime
from .common import bump_serial, node_actor, record_audit
from .errors import Conflict, Forbidden, ServiceError
from .nodes import name_taken
from .validation import clean_endpoint, clean_label, clean_public_key

__all__ = ["EnrollmentResult", "enroll", "unique_name"]

IPAM_ATTEMPTS = 64


@dataclass(frozen=True)
class EnrollmentResult:
    node: Node
    certificate: bytes
    ca_public_key: bytes
    network_name: str


def _token_refusal(token: EnrollmentToken | None, now) -> str:
    if token is None:
        return "invalid enrollment token"
    if token.revoked_at is not None:
        return "enrollment token has been revoked"
    if token.expires_at <= now:
        return "enrollment token has expired"
    if token.uses_left <= 0:
        return "enrollment token has been used up"
    return "enrollment token is no longer valid"


def enroll(
    *,
    token: str,
    name: str,
    public_key: bytes,
    endpoint: str | None = None,
    is_public: bool | None = None,
    source_ip: str | None = None,
) -> EnrollmentResult:
    name = clean_label(name, "name")
    public_key = clean_public_key(public_key)
    endpoint_ip, control_port = clean_endpoint(endpoint) if endpoint else (None, None)
    pid = compute_peer_id(public_key)
    try:
        parsed = parse_token(token or "")
        secret, fingerprint = parsed.secret, parsed.fingerprint
    except TokenFormatError:
        secret, fingerprint = token or "", None  # looked up as it is: no such token
    token_hash = hash_secret("enroll", secret)
    row = EnrollmentToken.objects.filter(token_hash=token_hash).select_related("network").first()
    network = row.network if row is not None else None

    def refuse(error: ServiceError, reason: str) -> ServiceError:
        # folded with the same refusals from the same address (services/audit.py): the first
        # attempt's name and token prefix stay on the event
        record_refusal(
            AuditAction.NODE_ENROLL_REJECTED,
            reason=reason,
            network=network,
            object_type="node",
            object_id=pid,
            source_ip=source_ip,
            name=name,
            token_prefix=row.prefix if row is not None else None,
        )
        return error

    now = timezone.now()
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.uses_left <= 0:
        detail = _token_refusal(row, now)
        raise refuse(Forbidden(detail), detail)
    if fingerprint is not None and not fingerprint_matches(fingerprint, bytes(row.network.ca_public_key)):
        detail = "the token's CA fingerprint is not this network's"
        raise refuse(Forbidden(detail), detail)
    public = row.is_public if is_public is None else bool(is_public)
    if public and not row.is_public:
        detail = "this enrollment token does not allow public nodes"
        raise refuse(Forbidden(detail), detail)
    if Node.objects.filter(peer_id=pid, status=NodeStatus.REVOKED).exists():
        detail = "this public key belongs to a revoked node"
        raise refuse(Forbidden(detail), detail)

    try:
        with transaction.atomic():
            spent = EnrollmentToken.objects.filter(
                pk=row.pk, uses_left__gt=0, revoked_at=None, expires_at__gt=now
            ).update(uses_left=F("uses_left") - 1)
            if spent != 1:
                row.refresh_from_db()
                raise Forbidden(_token_refusal(row, now))
            locked = bump_serial(row.network_id)
            existing = Node.objects.filter(peer_id=pid).first()
            if existing is not None:
                if existing.status == NodeStatus.REVOKED:
                    raise Forbidden("this public key belongs to a revoked node")
                raise Conflict("a node with this public key is already enrolled")
            name = unique_name(locked.pk, name)
            lifetime = certificate_lifetime()

            def certify(address: str) -> bytes:
                return issue_node_certificate(
                    locked,
                    public_key=public_key,
                    name=name,
                    overlay_ip=address,
                    is_public=public,
                    is_relay=public,
                    not_before=now,
                    not_after=now + lifetime,
                )

            node = _create_node(
                locked, pid, name, public_key, public, endpoint_ip, control_port, now, certify,
                now + lifetime, ephemeral=row.ephemeral,
            )
            certificate = bytes(node.certificate)
            tags = list(row.tags.all())  # the token's pre-assigned tags (services/tokens.py)
            if tags:  # a new node has none: nothing to read back or replace
                node.tags.add(*tags)
            record_audit(
                AuditAction.NODE_ENROLLED,
                actor=node_actor(node),
                network=locked,
                obj=node,
                source_ip=source_ip,
                name=name,
                peer_id=pid,
                overlay_ip=node.overlay_ip,
                is_public=public,
                ephemeral=row.ephemeral,
                token_prefix=row.prefix,
                tags=sorted(t.name for t in tags),
            )
            announce(Change(locked.pk, "node.enrolled", ALL_NODES, locked.serial))
    except ServiceError as exc:
        raise refuse(exc, exc.detail) from None
    events.enrolled()
    return EnrollmentResult(node, certificate, bytes(locked.ca_public_key), locked.name)


def unique_name(network_id: int, name: str) -> str:
    """`name`, or `name-2`, `name-3`, ... when an active node of the network has it already: a name
    is also a DNS name, which must point at one node. Runs after the serial bump, which serialises
    the network's writers, so two enrollments cannot pick the same one."""
    if not name_taken(network_id, name):
        return name
    for n in range(2, 10_000):
        tail = f"-{n}"
        candidate = name[: 63 - len(tail)].rstrip("-") + tail
        if not name_taken(network_id, candidate):
            return candidate
    raise Conflict(f"name: too many nodes are called {name!r}")


def _create_node(
    network,
    pid,
    name,
    public_key,
    public,
    endpoint_ip,
    control_port,
    now,
    certify: Callable[[str], bytes],
    certificate_expires_at,
    *,
    ephemeral: bool = False,
) -> Node:
    """Insert the node at the lowest free overlay address, with its certificate for that address
    (`certify(address)`) in the same INSERT; retry with the next address if a racer took it.

    The serial bump before this call already serialises enrollments into one network, so a
    collision needs a writer that bypassed it; each lost address is then skipped on the retry.
    """
    lost: set[str] = set()
    for _ in range(IPAM_ATTEMPTS):
        used = (  # no ORDER BY (the model's ordering would join the network for every row)
            Node.objects.filter(network=network, overlay_ip__isnull=False)
            .order_by()
            .values_list("overlay_ip", flat=True)
        )
        try:
            taken = (ip for ip in used if ip is not None)  # the query excludes NULL already
            address = str(next_free_address(network.overlay_cidr, taken, lost))
        except PoolExhausted as exc:
            raise Conflict(f"the overlay network {network.overlay_cidr} has no free address left") from exc
        try:
            with transaction.atomic():
                return Node.objects.create(
                    peer_id=pid,
                    name=name,
                    network=network,
                    overlay_ip=address,
                    public_key=public_key,
                    is_public=public,
                    is_relay=public,
                    ephemeral=ephemeral,
                    status=NodeStatus.ACTIVE,
                    enrolled_at=now,
                    endpoint_ip=endpoint_ip,
                    control_port=control_port,
                    certificate=certify(address),
                    certificate_expires_at=certificate_expires_at,
                )
        except IntegrityError:
            if Node.objects.filter(peer_id=pid).exists():
                raise Conflict("a node with this public key is already enrolled") from None
            lost.add(address)  # another transaction took this address first; look again
    raise Conflict("could not allocate an overlay address, try again")
