"""The `status --json` document: built here from the live objects, served by control/local.py.

The fixed shape (docs/operations.md#status-document; extra keys are only ever added, never renamed):

    {"node": {"peer_id", "name", "overlay_ip", "uptime_s",
              "drops": {"malformed", "unknown_session", "bad_tag", "replay", "spoofed_source",
                        "no_route", "queue_full"},
              "relay": {...},                       # extra: what this node forwarded as a hub
              ...extra, and in enrolled mode "mode", "serial", "server", "revoked_peers"},
     "peers": [{"peer_id", "name", "overlay_ip", "path", "endpoint", "rtt_ms", "tx_frames",
                "rx_frames", "tx_bytes", "rx_bytes", "lost_frames", "replayed_frames",
                "bad_frames", "last_handshake_s", ...extra}]}

The counters come from the data path (stats.py). The server link sends the same document up
(server_link.stats_from_status). No I/O here: the caller passes what to read.
"""

from __future__ import annotations

__all__ = ["node_status", "peer_status", "status_document"]


def node_status(*, peer_id: str, name: str, overlay_ip: str, uptime_s: float, datapath,
                relayed_handshakes: int, interface: str, mtu: int, udp) -> dict:
    """The "node" part (serverless keys; enrolled mode adds its own after these)."""
    writer = datapath.writer
    return {
        "peer_id": peer_id,
        "name": name,
        "overlay_ip": overlay_ip,
        "uptime_s": round(uptime_s, 3),
        "drops": datapath.drops.as_dict(),
        "relay": {**datapath.relay.as_dict(), "handshakes": relayed_handshakes},
        "interface": interface,
        "tun_gro": None if writer is None else {
            "writes": writer.writes, "merged_segments": writer.merged, "errors": writer.errors},
        "mtu": mtu,
        "udp": {"port": udp.port, "gso": udp.gso, "gro": udp.gro, "rcvbuf": udp.rcvbuf, "sndbuf": udp.sndbuf},
    }


def peer_status(p, *, control_up: bool, now: float) -> dict:
    """One entry of "peers" for the data path's Peer `p`."""
    st = p.stats
    ep = p.endpoint
    return {
        "peer_id": p.config.peer_id,
        "name": p.config.name,
        "overlay_ip": str(p.config.overlay_ip),
        "path": p.path,
        "endpoint": None if ep is None or p.hub is not None else _fmt(ep),
        "rtt_ms": st.rtt_ms,
        "tx_frames": st.tx_frames,
        "rx_frames": st.rx_frames,
        "tx_bytes": st.tx_bytes,
        "rx_bytes": st.rx_bytes,
        "lost_frames": st.lost_frames,
        "replayed_frames": st.replayed_frames,
        "bad_frames": st.bad_frames,
        "last_handshake_s": None if p.last_handshake is None else round(now - p.last_handshake, 3),
        "relayed_frames": st.relayed_frames,
        "handshakes": st.handshakes,
        "control": "up" if control_up else "down",
        "allowed_ips": [str(n) for n in p.config.allowed_ips],
    }


def status_document(node: dict, peers: list[dict]) -> dict:
    return {"node": node, "peers": peers}


def _fmt(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
