"""Networks: creation (with a fresh CA key), lookup by name, the DNS suffix."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from ..changes import ALL_NODES, Change, announce
from ..choices import AuditAction
from ..constants import DEFAULT_NETWORK_NAME, DEFAULT_OVERLAY_CIDR
from ..models import Network
from ..models.networks import validate_overlay_cidr
from ..pki import new_ca_key
from .common import bump_serial, record_audit
from .errors import Conflict, InvalidInput
from .validation import clean_dns_suffix, clean_label

__all__ = ["RESTORE_SERIAL_STEP", "advance_serials", "create_network", "get_or_create_network",
           "set_dns_suffix"]


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


def set_dns_suffix(network: Network, suffix: str, *, actor: str = "system") -> Network:
    """Nodes of `network` answer to `<name>.<suffix>` from the next push on; "" restores the default
    (`<network name>.mesh`, or no names when the network's name is not a DNS label)."""
    suffix = clean_dns_suffix(suffix)
    with transaction.atomic():
        locked = bump_serial(network.pk)
        old = locked.dns_suffix
        Network.objects.filter(pk=network.pk).update(dns_suffix=suffix)
        network.refresh_from_db()
        record_audit(AuditAction.NETWORK_DNS_CHANGED, actor=actor, network=locked, obj=network,
                     old=old, new=suffix, effective=network.effective_dns_suffix)
        announce(Change(locked.pk, "network.dns_changed", ALL_NODES, locked.serial))
    return network


RESTORE_SERIAL_STEP = 1_000_000


def advance_serials(by: int = RESTORE_SERIAL_STEP, name: str | None = None, *,
                    actor: str = "system") -> list[tuple[str, int, int]]:
    """Raise the serial of every network (or of the one named) by `by`, after the database was
    restored from a backup: agents keep the newest map they were sent and ignore one with a lower
    serial, and take a login answered at the serial they hold as "your map is current"
    (docs/operations.md, "Restoring a backup"). Every agent of the network is then sent the
    restored map; each network's step is audited. Returns (network, serial before, serial after)
    for each."""
    if not 1 <= by <= 2**62:
        raise InvalidInput("by: a whole number from 1 to 2**62")
    done = []
    with transaction.atomic():
        networks = Network.objects.select_for_update().order_by("name")
        if name is not None:
            networks = networks.filter(name=name)
        for network in networks:
            before = network.serial
            Network.objects.filter(pk=network.pk).update(serial=before + by)
            done.append((network.name, before, before + by))
            record_audit(AuditAction.NETWORK_SERIALS_ADVANCED, actor=actor, network=network, obj=network,
                         serial_before=before, serial_after=before + by)
            announce(Change(network.pk, "network.serials_advanced", ALL_NODES, before + by))
    if name is not None and not done:
        raise InvalidInput(f"network: no network named {name!r}")
    return done
