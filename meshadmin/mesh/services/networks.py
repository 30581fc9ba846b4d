"""Networks: creation (with a fresh CA key) and lookup by name."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from ..choices import AuditAction
from ..constants import DEFAULT_NETWORK_NAME, DEFAULT_OVERLAY_CIDR
from ..models import Network
from ..models.networks import validate_overlay_cidr
from ..pki import new_ca_key
from .common import record_audit
from .errors import Conflict, InvalidInput
from .validation import clean_label

__all__ = ["create_network", "get_or_create_network"]


def create_network(name: str, overlay_cidr: str = DEFAULT_OVERLAY_CIDR, *, actor: str = "system") -> Network:
    name = clean_label(name, "network name")
    try:
        validate_overlay_cidr(overlay_cidr)
    except ValidationError as exc:
        raise InvalidInput(f"overlay_cidr: {exc.messages[0]}") from exc
    public, sealed = new_ca_key()
    try:
        with transaction.atomic():
            network = Network.objects.create(
                name=name, overlay_cidr=overlay_cidr, ca_public_key=public, ca_private_sealed=sealed
            )
            record_audit(
                AuditAction.NETWORK_CREATED,
                actor=actor,
                network=network,
                obj=network,
                name=name,
                overlay_cidr=overlay_cidr,
            )
    except IntegrityError as exc:
        raise Conflict(f"a network named {name!r} already exists") from exc
    return network


def get_or_create_network(name: str = DEFAULT_NETWORK_NAME, *, actor: str = "system") -> Network:
    existing = Network.objects.filter(name=name).first()
    if existing is not None:
        return existing
    try:
        return create_network(name, actor=actor)
    except Conflict:
        return Network.objects.get(name=name)
