"""Two whole serverless agents on loopback, without root (a pipe stands in for each TUN): the wiring
of agent.py end to end. Both dial each other at start; they must settle on one control link,
the same on both sides, with data keys installed and each other's UDP endpoint learned. The
kernel side and real traffic are covered in tests/integration/."""

from __future__ import annotations

import asyncio
import ipaddress
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.agent import Agent
from nodeagent.config import AgentConfig, PeerConfig
from nodeagent.identity import NodeIdentity
from nodeagent.protocol.identity import peer_id
from nodeagent.startup import bind_control
from nodeagent.tunnel.tun import TunDevice
from nodeagent.tunnel.udp import UdpSocket


class Side:
    def __init__(self, name: str, n: int, tmp_path) -> None:
        self.name, self.n = name, n
        self.key = mldsa.MLDSA87PrivateKey.generate()
        self.public = self.key.public_key().public_bytes_raw()
        self.id = peer_id(self.public)
        self.udp = UdpSocket.open("127.0.0.1", 0)
        self.sock = bind_control("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.pipe = os.pipe()
        self.socket_path = tmp_path / f"{name}.sock"

    def agent(self, other: Side) -> Agent:
        peer = PeerConfig(other.public, other.id, ipaddress.ip_address(f"10.10.10.{other.n}"), other.name,
                          endpoint=("127.0.0.1", other.port))
        config = AgentConfig(path=self.socket_path.parent, name=self.name, private_key_path=self.socket_path,
                             overlay=ipaddress.ip_interface(f"10.10.10.{self.n}/24"),
                             listen_ip=ipaddress.ip_address("127.0.0.1"), control_port=self.port,
                             udp_port=self.udp.port, public=False, interface=f"smlo{self.n}", mtu=None,
                             control_socket=self.socket_path, peers=(peer,), keepalive_s=1.0)
        tun = TunDevice(self.pipe[0], config.interface, False)
        return Agent(config, NodeIdentity(self.key, self.public, self.id), tun, self.udp, self.sock, 1380)

    def close(self) -> None:
        self.udp.close()
        self.sock.close()
        for fd in self.pipe:
            os.close(fd)


@pytest.fixture
def sides(tmp_path):
    a, b = Side("uk", 1, tmp_path), Side("belgium", 2, tmp_path)
    yield a, b
    a.close()
    b.close()


async def _until(check, what: str, limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)


async def test_two_agents_settle_on_one_link_with_keys_and_endpoints(sides):
    a, b = sides
    uk, belgium = a.agent(b), b.agent(a)
    runs = [asyncio.create_task(agent.run()) for agent in (uk, belgium)]
    try:
        def settled() -> bool:
            return all(agent.links.is_up(other.id) and agent.peers.get(other.id).ring.current is not None
                       and agent.peers.get(other.id).endpoint is not None
                       for agent, other in ((uk, b), (belgium, a)))

        await _until(settled, "a control link with keys and endpoints on both sides")
        for _ in range(20):  # let a second, simultaneous dial finish its election
            await asyncio.sleep(0.05)
        await _until(settled, "still settled after the election")
        ours, theirs = uk.links.get(b.id), belgium.links.get(a.id)
        assert ours.initiator_id == theirs.initiator_id  # the same link on both sides
        assert uk.peers.get(b.id).endpoint == ("127.0.0.1", b.udp.port)
        assert belgium.peers.get(a.id).endpoint == ("127.0.0.1", a.udp.port)
        status = uk.status()
        assert status["peers"][0]["control"] == "up" and status["peers"][0]["last_handshake_s"] is not None
        (counters,) = uk.stats_report().peers  # what the server link sends: the same peer and counters
        assert (counters.peer_id, counters.path) == (b.id, "direct") and counters.last_handshake_s is not None
    finally:
        for agent in (uk, belgium):
            agent.stop.set()
        await asyncio.gather(*runs, return_exceptions=True)
    assert not a.socket_path.exists() and not b.socket_path.exists()


def test_a_serverless_agent_enforces_its_configured_policy(sides):
    from dataclasses import replace

    from nodeagent.protocol.policy import check_policy, check_rule

    a, b = sides
    policy = check_policy("deny", [check_rule(["10.10.10.2"], ["10.10.10.1"], "icmp", [])])
    plain = a.agent(b)
    assert plain.datapath.filter is None  # no [policy]: every packet allowed
    config = replace(plain.config, policy=policy)
    tun = TunDevice(a.pipe[0], config.interface, False)
    agent = Agent(config, NodeIdentity(a.key, a.public, a.id), tun, a.udp, a.sock, 1380)
    assert agent.datapath.filter is not None and agent.datapath.filter.policy == policy
    assert agent.status()["node"]["policy"]["rules"] == 1
