"""The underlay mark: every socket the agent speaks to its peers and to the server through.

The agent sets SO_MARK = UNDERLAY_MARK on its UDP data socket, its control listener (the kernel
marks what it sends on accepted connections with the listener's mark), the control connections it
dials and its websocket to the server. While the node sends its internet traffic through an exit
node, a policy rule sends every unmarked packet into the tunnel and lets marked ones use the
node's own routes (tunnel/tun.py `exit_routing_up`): the tunnel's own datagrams, its control
links and the server link never enter the tunnel, whatever address they go to, including an
endpoint learned later (a peer that roams, a new peer). Without an exit node the mark changes
nothing.

Setting SO_MARK needs CAP_NET_ADMIN, which `up` has; without it (a test agent run by a user) the
socket stays unmarked and the agent says so once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from .mss import clamp_mss

__all__ = ["UNDERLAY_MARK", "connect_marked", "mark"]

log = logging.getLogger(__name__)

UNDERLAY_MARK = 0x736D0001  # "sm" and 1: chosen not to clash with WireGuard's 0xca6c or Tailscale's 0x80000
SO_MARK = getattr(socket, "SO_MARK", 36)
_warned = False


def mark(sock: socket.socket) -> bool:
    """Put the underlay mark on `sock`; False (logged once) when the kernel refuses."""
    global _warned
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, UNDERLAY_MARK)
        return True
    except OSError as exc:
        if not _warned:
            _warned = True
            log.warning("cannot mark the agent's sockets (%s): with an exit node their traffic could "
                        "enter the tunnel", exc.strerror)
        return False


async def connect_marked(host: str, port: int) -> socket.socket:
    """A TCP connection to `host` (an address or a name) and `port` from a marked socket; the
    caller hands it to asyncio (open_connection(sock=...), websockets' connect(sock=...))."""
    loop = asyncio.get_running_loop()
    infos: list[tuple[int, tuple[str, int]]]
    try:
        infos = [(ipaddress.ip_address(host).version, (host, port))]
    except ValueError:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        infos = [(6 if family == socket.AF_INET6 else 4, (str(addr[0]), int(addr[1])))
                 for family, *_rest, addr in found]
    last: OSError | None = None
    for version, addr in infos:
        sock = socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        mark(sock)
        clamp_mss(sock)  # it crosses a path that drops big packets without a word (mss.py)
        try:
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise last or OSError(f"no address for {host}")
