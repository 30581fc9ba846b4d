"""Per-link samples and node presence. Written only by ingest.py, presence.py and tasks.py."""

from __future__ import annotations

from django.db import models

from meshadmin.mesh.models import Network, Node

__all__ = ["Presence", "Resolution", "Sample"]


class Resolution(models.IntegerChoices):
    RAW = 0, "raw (one agent report, ~2 s)"
    MINUTE = 60, "1-minute aggregate"


class Sample(models.Model):
    """What one node saw on its link to one peer during `interval_s` seconds ending at `ts`.

    The traffic columns are *deltas* over the interval, named as the agent's counters
    (nodeagent.protocol.counters: ingest stores `difference` of two reports, which treats a
    smaller total as an agent restart; readers derive rates with `rates`). A minute row sums the
    raw rows of that minute; `rtt_ms` is their mean.
    """

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    peer_id = models.CharField(max_length=40)
    resolution = models.SmallIntegerField(choices=Resolution.choices, default=Resolution.RAW)
    ts = models.DateTimeField()
    interval_s = models.FloatField()
    path = models.CharField(max_length=46)
    rtt_ms = models.FloatField(null=True, blank=True)
    last_handshake_s = models.FloatField(null=True, blank=True)
    tx_bytes = models.BigIntegerField(default=0)
    rx_bytes = models.BigIntegerField(default=0)
    tx_frames = models.BigIntegerField(default=0)
    rx_frames = models.BigIntegerField(default=0)
    lost_frames = models.BigIntegerField(default=0)
    denied_frames = models.BigIntegerField(default=0, help_text="refused by the node's access policy")
    samples = models.IntegerField(default=1, help_text="raw samples summed into this row")
    rtt_samples = models.IntegerField(default=0, help_text="of those, how many measured rtt_ms")
    rolled_up = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["node", "peer_id", "resolution", "ts"], name="sample_link_series"),
            models.Index(fields=["network", "resolution", "ts"], name="sample_network_recent"),
            models.Index(fields=["resolution", "rolled_up", "ts"], name="sample_rollup_todo"),
        ]

    def __str__(self) -> str:
        return f"{self.node_id}->{self.peer_id[:8]} @ {self.ts:%H:%M:%S}"


class Presence(models.Model):
    """Websocket presence of a node: open sockets (across server processes) and last activity."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="presence")
    connections = models.IntegerField(default=0)
    online = models.BooleanField(default=False)
    connected_at = models.DateTimeField(null=True, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_serial = models.PositiveBigIntegerField(null=True, blank=True, help_text="last netmap serial acked")
    # the node's DHT as its last report said (nodeagent.protocol.counters.DhtCounters), and when
    dht = models.JSONField(null=True, blank=True,
                           help_text="contacts, records, last_publish_s, lookups, failures")
    dht_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.node_id}: {'online' if self.online else 'offline'}"
