"""A real data path for the agent's collaborators (peers, paths, sessions, handshakes): a UDP socket
on loopback, and one end of a socketpair standing in for the TUN device (no root needed)."""

from __future__ import annotations

import socket
import time

import pytest

from nodeagent.tunnel.datapath import DataPath
from nodeagent.tunnel.udp import UdpSocket


@pytest.fixture
def make_datapath():
    """make_datapath(is_hub=False, clock=time.monotonic) -> DataPath; `dp.wanted` lists the peers it
    asked a handshake for."""
    opened = []

    def make(is_hub: bool = False, clock=time.monotonic) -> DataPath:
        udp = UdpSocket.open("127.0.0.1", 0)
        app, tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        tun.setblocking(False)
        opened.extend((udp, app, tun))
        wanted: list = []
        dp = DataPath(tun.fileno(), udp, [], is_hub=is_hub, on_handshake_needed=wanted.append, clock=clock)
        dp.wanted = wanted
        return dp

    yield make
    for thing in opened:
        thing.close()
