"""Small TCP segments for the agent's own TCP connections (control links, the DHT, the server's
websocket), so that they cross a path that drops big packets without an ICMP (a black hole).

A TCP stream learns a path MTU only from ICMP, like the kernel's UDP (Linux's own probing,
`net.ipv4.tcp_mtu_probing`, is off by default and is the host's to choose, not ours). Over a black
hole every full-size segment vanishes: a handshake (1.6-14 KB, several segments) never completes,
and the tunnel never comes up. CONTROL_MSS bounds both directions of a connection from one side:
the kernel sends segments no larger than it, and advertises it in the SYN (or SYN-ACK; accepted
connections inherit it from the listening socket), which bounds what the other side sends. 1,200
bytes with the IPv6, TCP and timestamp headers (72) fit the 1,280 bytes every IPv6 path carries;
the control traffic is small, so the extra segments cost nothing that shows.
"""

from __future__ import annotations

import logging
import socket

__all__ = ["CONTROL_MSS", "clamp_mss"]

log = logging.getLogger(__name__)

CONTROL_MSS = 1200


def clamp_mss(sock: socket.socket) -> None:
    """Bound `sock`'s segments (a TCP socket, before connect or listen) to CONTROL_MSS."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, CONTROL_MSS)
    except OSError as exc:  # not expected on Linux; the connection works as before
        log.debug("TCP_MAXSEG: %s", exc.strerror)
