"""Certificate renewal: a new certificate for an enrolled node's key, peer id and overlay address.

Asked for by the node itself over its authenticated websocket (`renew`, realtime/consumers.py),
so the node proved it holds its key; the server accepts an active node whatever its current
certificate's state, expired included: the certificate plays no part in the login, and whether the
node still belongs to the network is the server's own record (a revoked node never gets here).

A certificate less than half-way through its lifetime is not re-issued: the node gets the one it
holds back, so an agent cannot make the server sign, bump the serial and push to the whole mesh at
will. A re-issued certificate lasts `certificate_lifetime()` from now and carries the node's
current name and flags; the old one is not revoked (it expires on its own). Audited, and announced:
every peer's netmap lists the new fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from nodeagent.protocol.cert import CertificateError, parse_certificate

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction, NodeStatus
from ..constants import CERTIFICATE_LIFETIME
from ..models import Node
from ..models.nodes import certificate_fields
from ..pki import issue_node_certificate
from .common import bump_serial, node_actor, record_audit
from .errors import Forbidden

__all__ = ["Renewal", "certificate_lifetime", "renew_certificate"]


def certificate_lifetime() -> timedelta:
    """How long a certificate issued now lasts (SHADOWMESH_CERT_LIFETIME_S; tests use seconds)."""
    seconds = getattr(settings, "SHADOWMESH_CERT_LIFETIME_S", None)
    return CERTIFICATE_LIFETIME if not seconds else timedelta(seconds=int(seconds))


@dataclass(frozen=True)
class Renewal:
    certificate: bytes
    renewed: bool  # False: the current certificate, not due for renewal yet


def _due(certificate: bytes, now: datetime) -> bool:
    try:
        cert = parse_certificate(bytes(certificate))
    except CertificateError:
        return True  # whatever is stored is no use to the node
    return now.timestamp() >= cert.not_before + (cert.not_after - cert.not_before) / 2


def renew_certificate(node: Node, *, source_ip: str | None = None, now: datetime | None = None) -> Renewal:
    now = now or timezone.now()
    with transaction.atomic():
        current = Node.objects.select_for_update().select_related("network").get(pk=node.pk)
        if current.status != NodeStatus.ACTIVE or current.overlay_ip is None:
            raise Forbidden("this node has been revoked")
        if not _due(bytes(current.certificate), now):
            return Renewal(bytes(current.certificate), renewed=False)
        locked = bump_serial(current.network_id)
        lifetime = certificate_lifetime()
        certificate = issue_node_certificate(
            locked, public_key=bytes(current.public_key), name=current.name, overlay_ip=current.overlay_ip,
            is_public=current.is_public, is_relay=current.is_relay, not_before=now, not_after=now + lifetime)
        old_expiry = current.certificate_expires_at
        Node.objects.filter(pk=current.pk).update(**certificate_fields(certificate),
                                                  certificate_expires_at=now + lifetime)
        record_audit(AuditAction.NODE_CERT_RENEWED, actor=node_actor(current), network=locked, obj=current,
                     source_ip=source_ip, peer_id=current.peer_id,
                     old_expires_at=old_expiry.isoformat() if old_expiry else None,
                     expires_at=(now + lifetime).isoformat())
        announce(Change(locked.pk, "node.certificate_renewed", ALL_NODES, locked.serial))
    return Renewal(certificate, renewed=True)
