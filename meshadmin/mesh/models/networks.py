import ipaddress

from django.core.exceptions import ValidationError
from django.db import models

from nodeagent.protocol.dnsname import default_suffix

from ..choices import PolicyDefault
from ..constants import DEFAULT_OVERLAY_CIDR

__all__ = ["Network", "validate_overlay_cidr"]


def validate_overlay_cidr(value: str) -> None:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValidationError(f"{value!r} is not a network prefix (like 10.10.10.0/24)") from exc
    if net.num_addresses < 4:
        raise ValidationError("an overlay network needs at least 4 addresses")


class Network(models.Model):
    """One overlay network with its own CA.

    `serial` goes up by one in the same transaction as every change to the network's nodes,
    tokens, routes or access policy; agents ignore netmaps older than the one they applied.

    The CA key: `ca_public_key` is the raw ML-DSA-87 public key (2,592 bytes), handed to nodes at
    enrollment. The private key is never stored in clear: `ca_private_sealed` holds its 32-byte
    seed sealed with ChaCha20-Poly1305 under a key derived from SECRET_KEY (see mesh/pki.py).
    Neither field is editable or shown by the admin or the API.
    """

    name = models.CharField(max_length=63, unique=True)
    overlay_cidr = models.CharField(
        max_length=43, default=DEFAULT_OVERLAY_CIDR, validators=[validate_overlay_cidr]
    )
    dns_suffix = models.CharField(
        max_length=189, blank=True, default="",
        help_text="nodes answer to <name>.<suffix>; empty: <network name>.mesh (services.networks)",
    )
    serial = models.PositiveBigIntegerField(default=0, editable=False)
    policy_default = models.CharField(
        max_length=8, choices=PolicyDefault.choices, default=PolicyDefault.ALLOW,
        help_text="what the access policy allows where no rule speaks (meshadmin/netmap/policy.py)")
    ca_public_key = models.BinaryField(editable=False)
    ca_private_sealed = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_dns_suffix(self) -> str | None:
        """The suffix nodes answer under: the configured one, else `<name>.mesh` when the network's
        name is a DNS label, else None (no DNS names)."""
        return self.dns_suffix or default_suffix(self.name)

    @property
    def prefix(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.overlay_cidr)
