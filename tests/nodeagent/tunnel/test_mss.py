"""The agent's TCP connections keep their segments at CONTROL_MSS both ways (tunnel/mss.py), from
either end: the control port's listening socket (startup.bind_control) and the dialing side
(mark.connect_marked, which control links and the server's websocket use). Real sockets on
loopback, where a TCP segment is otherwise up to 65,483 bytes."""

from __future__ import annotations

import asyncio
import socket

from nodeagent.startup import bind_control
from nodeagent.tunnel.mark import connect_marked
from nodeagent.tunnel.mss import CONTROL_MSS


def mss(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)


def test_a_plain_client_of_the_control_port_is_held_to_small_segments():
    listener = bind_control("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname())
    try:
        listener.setblocking(True)
        accepted, _ = listener.accept()
        with accepted:
            # the SYN-ACK advertised CONTROL_MSS: the other side sends no bigger segments
            assert mss(client) <= CONTROL_MSS and mss(accepted) <= CONTROL_MSS
    finally:
        client.close()
        listener.close()
    plain = socket.create_server(("127.0.0.1", 0))
    other = socket.create_connection(plain.getsockname())
    try:
        assert mss(other) > 10 * CONTROL_MSS  # loopback, unclamped: what the clamp changes
    finally:
        other.close()
        plain.close()


def test_a_dialed_connection_holds_a_plain_server_to_small_segments():
    async def dial(addr):
        return await connect_marked(*addr)

    server = socket.create_server(("127.0.0.1", 0))
    try:
        sock = asyncio.run(dial(server.getsockname()))
        with sock:
            accepted, _ = server.accept()
            with accepted:
                # our SYN advertised CONTROL_MSS: the server sends no bigger segments
                assert mss(accepted) <= CONTROL_MSS and mss(sock) <= CONTROL_MSS
    finally:
        server.close()
