from django.db import models
from django.utils import timezone

from nodeagent.protocol.cert import CertificateError, parse_certificate

from ..choices import NodeStatus
from .networks import Network

__all__ = ["Node", "certificate_fields", "certificate_fingerprint"]


def certificate_fingerprint(certificate: bytes | memoryview) -> str:
    """The fingerprint peers pin (SHA-256 of the signed part); "" for bytes that are no certificate."""
    try:
        return parse_certificate(bytes(certificate)).fingerprint
    except CertificateError:
        return ""


def certificate_fields(certificate: bytes) -> dict:
    """The columns to write for a new certificate, for `QuerySet.update(**...)`."""
    return {"certificate": certificate, "certificate_fingerprint": certificate_fingerprint(certificate)}


class Node(models.Model):
    """An enrolled node: its identity, overlay address, certificate and discovery record.

    The discovery record (`endpoint_ip`, `control_port`, `udp_port`, `advertised_public`,
    `observed_ip`, `candidates`) is valid until
    `record_expires_at`; reads treat an expired record as absent and a beat task clears it.
    A revoked node keeps its row (so its key cannot enroll again) but gives up its overlay IP.
    An exit node is a node with approved default routes (routes.py, services/exits.py); `use_exit`
    is the exit node an operator chose for this one.
    """

    peer_id = models.CharField(max_length=40, unique=True, editable=False)
    name = models.CharField(max_length=63)
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="nodes")
    overlay_ip = models.GenericIPAddressField(null=True, blank=True)
    public_key = models.BinaryField(editable=False)
    is_public = models.BooleanField(default=False)
    is_relay = models.BooleanField(default=False)
    ephemeral = models.BooleanField(default=False, help_text="deleted once silent (services/ephemeral.py)")
    status = models.CharField(max_length=16, choices=NodeStatus.choices, default=NodeStatus.ACTIVE)
    certificate = models.BinaryField(editable=False)
    # kept with the certificate by save() and by every update that sets it (certificate_fields):
    # each netmap load reads this instead of a thousand ~7 KB certificates
    certificate_fingerprint = models.CharField(max_length=64, blank=True, default="", editable=False)
    certificate_expires_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # discovery record
    endpoint_ip = models.GenericIPAddressField(null=True, blank=True)
    control_port = models.PositiveIntegerField(null=True, blank=True)
    udp_port = models.PositiveIntegerField(null=True, blank=True)
    advertised_public = models.BooleanField(
        default=False, help_text="is_public as last registered; only a node enrolled as public may set it"
    )
    observed_ip = models.GenericIPAddressField(null=True, blank=True)
    observed_port = models.PositiveIntegerField(null=True, blank=True)
    candidates = models.JSONField(
        default=list, blank=True,
        help_text="UDP candidates the agent reported besides its endpoint: [source, ip, port] "
                  "with source 'local' or 'reflexive' (validated, at most 15)")
    last_seen = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=64, blank=True, default="",
                                     help_text="software version the agent last reported")
    record_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    use_exit = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="the exit node this node sends its internet traffic through (chosen in the dashboard)",
    )

    class Meta:
        ordering = ["network", "name"]
        constraints = [
            models.UniqueConstraint(fields=["network", "overlay_ip"], name="node_unique_overlay_ip"),
        ]

    def save(self, *args, **kwargs) -> None:
        """The fingerprint follows the certificate on every save that writes the certificate."""
        fields = kwargs.get("update_fields")
        if fields is None or "certificate" in fields:
            self.certificate_fingerprint = certificate_fingerprint(self.certificate or b"")
            if fields is not None and "certificate_fingerprint" not in fields:
                kwargs["update_fields"] = [*fields, "certificate_fingerprint"]
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.name} ({self.peer_id[:12]})"

    @property
    def is_revoked(self) -> bool:
        return self.status == NodeStatus.REVOKED

    def record_is_live(self, now) -> bool:
        return (
            self.status == NodeStatus.ACTIVE
            and self.record_expires_at is not None
            and self.record_expires_at > now
        )
