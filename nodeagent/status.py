"""The `status --json` document and the counter report: built here from the live objects.

The fixed shape (docs/operations.md#status-document; extra keys are only ever added, never renamed):

    {"node": {"peer_id", "name", "overlay_ip", "uptime_s",
              "drops": {"malformed", "unknown_session", "bad_tag", "replay", "spoofed_source",
                        "no_route", "queue_full", "policy", "too_big"},
              "relay": {...},                       # extra: what this node forwarded as a hub
              "policy": {"default", "rules", ...},  # extra: the access policy in force, its flows
              ...extra, and in enrolled mode "mode", "serial", "server", "revoked_peers", "stats_interval_s",
              "dht": {"contacts", "records", "last_publish_s", "lookups", "failures", ...extra}
                     or null (the DHT turned off)},
     "peers": [{"peer_id", "name", "overlay_ip", "path", "endpoint", "rtt_ms", "tx_frames",
                "rx_frames", "tx_bytes", "rx_bytes", "lost_frames", "replayed_frames",
                "bad_frames", "last_handshake_s", "denied_frames", ...extra}]}

`peer_counters` is the one place where the data path's live counters (stats.py) become the
wire type protocol.counters.PeerCounters; a peer entry is that object's keys plus the local
extras, and the report the server link sends up every 2 s (`stats_report`, a messages.Stats)
carries the same objects. The node's DHT goes the same way: `dht_status` is its object in the
document, the keys of protocol.counters.DhtCounters plus local extras, and the report carries the
DhtCounters. The document is served by control/local.py. No I/O here: the caller passes what to
read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol.counters import DhtCounters, PeerCounters, counters_to_dict, dht_to_dict
from .protocol.endpoints import endpoint_text
from .protocol.messages import Stats

if TYPE_CHECKING:  # types only: this module never imports the data path
    from collections.abc import Iterable

    from .tunnel.datapath import DataPath, Peer
    from .tunnel.udp import UdpSocket

# a document of plain data (str/int/float/bool/None/list/dict), as `status --json` prints it
Document = dict[str, object]

__all__ = ["dht_status", "node_status", "peer_counters", "peer_status", "stats_report", "status_document"]


def node_status(*, peer_id: str, name: str, overlay_ip: str, uptime_s: float, datapath: DataPath,
                relayed_handshakes: int, interface: str, mtu: int, udp: UdpSocket) -> Document:
    """The "node" part (serverless keys; enrolled mode adds its own after these)."""
    writer = datapath.writer
    return {
        "peer_id": peer_id,
        "name": name,
        "overlay_ip": overlay_ip,
        "uptime_s": round(uptime_s, 3),
        "drops": datapath.drops.as_dict(),
        "relay": {**datapath.relay.as_dict(), "handshakes": relayed_handshakes},
        "policy": {"default": "allow", "rules": 0} if datapath.filter is None else datapath.filter.status(),
        "interface": interface,
        "tun_gro": None if writer is None else {
            "writes": writer.writes, "merged_segments": writer.merged, "errors": writer.errors},
        "mtu": mtu,
        "udp": {"port": udp.port, "gso": udp.gso, "gro": udp.gro, "rcvbuf": udp.rcvbuf, "sndbuf": udp.sndbuf,
                "narrow_paths": len(udp.narrow)},
        "fragmented": datapath.fragmented,
    }


def peer_counters(p: Peer, *, now: float) -> PeerCounters:
    """The counters of the data path's Peer `p` as the wire type, at monotonic time `now`."""
    st = p.stats
    return PeerCounters(
        peer_id=p.config.peer_id, path=p.path, rtt_ms=st.rtt_ms, tx_frames=st.tx_frames,
        rx_frames=st.rx_frames, tx_bytes=st.tx_bytes, rx_bytes=st.rx_bytes, lost_frames=st.lost_frames,
        replayed_frames=st.replayed_frames, bad_frames=st.bad_frames,
        last_handshake_s=None if p.last_handshake is None else round(now - p.last_handshake, 3),
        denied_frames=st.denied_frames)


def peer_status(p: Peer, *, control_up: bool, now: float) -> Document:
    """One entry of "peers" for the data path's Peer `p`: its counters and the local extras."""
    c = peer_counters(p, now=now)
    ep = p.endpoint
    entry: Document = {
        "peer_id": c.peer_id,
        "name": p.config.name,
        "overlay_ip": str(p.config.overlay_ip),
        "path": c.path,
        "endpoint": None if ep is None or p.data_hub is not None else endpoint_text(ep),
    }
    entry.update(counters_to_dict(c))  # peer_id and path keep their places; the counters follow
    entry.update({
        "relayed_frames": p.stats.relayed_frames,
        "handshakes": p.stats.handshakes,
        "control": "up" if control_up else "down",
        "allowed_ips": [str(n) for n in p.config.allowed_ips],
        "path_changes": p.stats.path_changes,
        "handshake_timeouts": p.stats.handshake_timeouts,
        "handshake_failures": dict(sorted(p.stats.handshake_failures.items())),
        "handshake_give_ups": p.stats.handshake_give_ups,
    })
    return entry


def dht_status(counters: DhtCounters, *, peers: int) -> Document:
    """The `dht` object of the document: the counters' keys, then how many peers the DHT gave us
    (nodes the applied netmap does not list)."""
    return {**dht_to_dict(counters), "peers": peers}


def stats_report(uptime_s: float, peers: Iterable[Peer], *, now: float,
                 dht: DhtCounters | None = None) -> Stats:
    """The `stats` message the server link sends: the same counters as the document's peers (and
    its DHT's, when the node runs one)."""
    return Stats(round(uptime_s, 3), tuple(peer_counters(p, now=now) for p in peers), dht)


def status_document(node: Document, peers: list[Document]) -> Document:
    return {"node": node, "peers": peers}


