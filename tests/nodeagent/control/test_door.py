"""The control port is the agent's unauthenticated door: what a stranger who knows peer ids (they are
public) can make a real agent do through it. Whole serverless agents on loopback, no root: the
responder `belgium` listens on 127.0.0.1, its genuine peer `uk` dials from 127.0.0.1, strangers
connect from other loopback addresses (127.0.0.2 ...), so every source is its own address.

Attack numbers are those of docs/threat-model.md: 9 (HELLO replayed before its handshake
completed), 10 (admission limits), 12/13 (a spoofed-id HELLO flood costs no signing or
encapsulation, while the genuine peer's handshake and in-link rekeys succeed), 14 (nothing sent
before authentication), 25 (per-source limits), 35 (idle connections cannot lock a peer out).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.agent import Agent
from nodeagent.config import AgentConfig, PeerConfig
from nodeagent.identity import NodeIdentity
from nodeagent.protocol.control import frame_clear_handshake
from nodeagent.protocol.handshake import Initiator
from nodeagent.protocol.identity import peer_id
from nodeagent.protocol.opcount import COUNTS
from nodeagent.protocol.trust import LocalIdentity, PinnedKeys
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

    def agent(self, other: Side, dial: bool = True) -> Agent:
        peer = PeerConfig(other.public, other.id, ipaddress.ip_address(f"10.10.10.{other.n}"), other.name,
                          endpoint=("127.0.0.1", other.port) if dial else None)
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


@contextlib.asynccontextmanager
async def running(*agents: Agent):
    runs = [asyncio.create_task(agent.run()) for agent in agents]
    try:
        await asyncio.sleep(0.05)
        yield
    finally:
        for agent in agents:
            agent.stop.set()
        await asyncio.gather(*runs, return_exceptions=True)


async def until(check, what: str, limit: float = 30.0) -> None:
    """Poll `check()`; the limit is a failure condition, not a speed claim."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)


def spoofed_hello(claimed: Side, responder: Side, now: float | None = None) -> bytes:
    """A well-formed HELLO that claims `claimed`'s peer id (and presents its public key, which is
    public) but was made by a stranger's key."""
    impostor = LocalIdentity.pinned(mldsa.MLDSA87PrivateKey.generate())
    impostor.credential = impostor.public_key = claimed.public
    impostor.peer_id = claimed.id
    now = time.time() if now is None else now
    ini = Initiator(impostor, PinnedKeys([responder.public]), responder.id, now)
    return ini.create_hello()


def genuine_hello(sender: Side, responder: Side) -> bytes:
    """A HELLO made by `sender`'s own key, as a recording of its traffic would hold it."""
    ini = Initiator(LocalIdentity.pinned(sender.key), PinnedKeys([responder.public]), responder.id,
                    time.time())
    return ini.create_hello()


async def knock(port: int, source: str, payload: bytes, wait: float = 3.0) -> int:
    """Connect from `source`, send `payload`, and return how many bytes came back before the
    responder closed the connection (or `wait` seconds passed)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    got = 0
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        if payload:
            await loop.sock_sendall(sock, payload)
        async with asyncio.timeout(wait):
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    break
                got += len(data)
    except (TimeoutError, ConnectionError):
        pass
    finally:
        sock.close()
    return got


STRANGERS = [f"127.0.0.{i}" for i in range(2, 10)]


async def flood(port: int, hellos: list[bytes], stop: asyncio.Event, answered: list[int]) -> int:
    """Each of STRANGERS sends spoofed HELLOs, one connection after another, all sources at once,
    until `stop`; the bytes each connection got back are added to `answered`. Returns how many
    HELLOs were sent."""
    sent = 0

    async def one_source(source: str) -> None:
        nonlocal sent
        while not stop.is_set():
            hello = hellos[sent % len(hellos)]
            sent += 1
            answered.append(await knock(port, source, frame_clear_handshake(hello), wait=0.2))

    await asyncio.gather(*(one_source(s) for s in STRANGERS))
    return sent


# --- 12: what a HELLO claiming a known peer costs -------------------------------------------------


async def test_a_flood_of_hellos_claiming_a_known_peer_costs_no_signing_or_encapsulation(sides):
    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    hellos = [spoofed_hello(uk, belgium) for _ in range(8)]  # made before counting: the stranger's work
    async with running(responder):
        before = COUNTS.snapshot()
        answers = [await knock(belgium.port, STRANGERS[i % len(STRANGERS)], frame_clear_handshake(h),
                               wait=1.0) for i, h in enumerate(hellos * 4)]
        spent = COUNTS.since(before)
    assert answers == [0] * len(answers)  # no CHALLENGE: nothing at all comes back
    assert spent["signatures"] == 0 and spent["encapsulations"] == 0
    assert responder.peers.get(uk.id).ring.current is None


# --- 12/13: the genuine peer gets in and rekeys while its id is flooded -----------------------------


async def test_the_genuine_peer_connects_and_rekeys_in_its_link_while_strangers_flood_its_id(sides):
    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    genuine = uk.agent(belgium)
    hellos = [spoofed_hello(uk, belgium) for _ in range(8)]
    stop, answered = asyncio.Event(), []
    async with running(responder):
        attack = asyncio.create_task(flood(belgium.port, hellos, stop, answered))
        try:
            await asyncio.sleep(1.0)  # the flood is on before the genuine peer starts
            async with running(genuine):
                peer_at_uk = genuine.peers.get(belgium.id)
                await until(lambda: genuine.links.is_up(belgium.id) and peer_at_uk.ring.current is not None,
                            "uk's control link and keys with belgium, during the flood")
                for _ in range(3):  # rekeys inside the link, during the flood
                    old = peer_at_uk.stats.handshakes
                    assert genuine.handshakes.request_handshake(peer_at_uk)
                    await until(lambda old=old: peer_at_uk.stats.handshakes > old, "an in-link rekey")
        finally:
            stop.set()
            sent = await attack
    assert sent >= 8 and answered == [0] * len(answered)


# --- 9: a HELLO replayed while its own handshake runs ------------------------------------------------


async def test_a_hello_replayed_before_its_handshake_completes_gets_nothing(sides):
    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    hello = genuine_hello(uk, belgium)  # recorded on the wire by an on-path attacker
    async with running(responder):
        first = asyncio.create_task(knock(belgium.port, "127.0.0.1", frame_clear_handshake(hello), wait=2.0))
        await asyncio.sleep(0.5)  # the genuine exchange is waiting for its CONFIRM
        before = COUNTS.snapshot()
        replayed = await knock(belgium.port, STRANGERS[0], frame_clear_handshake(hello), wait=1.0)
        spent = COUNTS.since(before)
        assert await first > 0  # the original got its CHALLENGE
    assert replayed == 0
    assert spent["signatures"] == 0 and spent["encapsulations"] == 0


# --- 14: bytes sent before authentication ------------------------------------------------------------


async def test_nothing_is_sent_back_before_the_initiator_is_authenticated(sides):
    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    stranger = Side("stranger", 3, belgium.socket_path.parent)
    try:
        unknown = genuine_hello(stranger, belgium)
        hello = genuine_hello(uk, belgium)
        probes = {
            "garbage": os.urandom(3000),
            "a truncated HELLO": frame_clear_handshake(hello)[:1000],
            "an oversized frame": (70000).to_bytes(4, "big") + b"\x01" + bytes(100),
            "a HELLO from an unknown key": frame_clear_handshake(unknown),
            "a HELLO claiming uk": frame_clear_handshake(spoofed_hello(uk, belgium)),
            "a CONFIRM first": frame_clear_handshake(b"\x03" + bytes(4700)),
            "nothing": b"",
        }
        async with running(responder):
            sent_back = {what: await knock(belgium.port, STRANGERS[i % len(STRANGERS)], data, wait=1.0)
                         for i, (what, data) in enumerate(probes.items())}
            # the genuine HELLO (authenticated) gets its CHALLENGE, no bigger than what it sent
            challenge = await knock(belgium.port, "127.0.0.1", frame_clear_handshake(hello), wait=2.0)
    finally:
        stranger.close()
    assert sent_back == dict.fromkeys(probes, 0)
    assert 0 < challenge <= len(frame_clear_handshake(hello))


# --- 25 and 35: per-source limits; idle connections cannot lock a peer out ---------------------------


async def hold(port: int, source: str, n: int) -> list[socket.socket]:
    """`n` idle connections from `source` (nothing is ever sent on them)."""
    loop = asyncio.get_running_loop()
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        held.append(s)
    return held


def still_open(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            n += s.recv(1) != b""  # an open, silent connection has nothing to read
        except BlockingIOError:
            n += 1
        except ConnectionError:
            pass
    return n


async def test_one_source_holds_only_its_share_of_unauthenticated_connections(sides):
    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    async with running(responder):
        socks = await hold(belgium.port, STRANGERS[0], 10)
        await asyncio.sleep(0.3)
        try:
            open_now = still_open(socks)
        finally:
            for s in socks:
                s.close()
    assert open_now <= 4


async def test_a_source_opening_connections_too_fast_is_cut_off_unread_and_others_are_not(sides):
    """Attack 10 at the door: one source's connection rate is capped (SOURCE_RATE, burst
    SOURCE_BURST); its surplus is closed before a byte is read, and another source is unaffected."""
    from nodeagent.control.server import SOURCE_BURST

    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    async with running(responder):
        door = responder.links.server
        door.clock = lambda: 1000.0  # time stands still: no token comes back during the test
        before = door.status()
        burst = await asyncio.gather(*(knock(belgium.port, STRANGERS[0], b"", wait=0.5)
                                       for _ in range(SOURCE_BURST + 6)))
        mid = door.status()
        await knock(belgium.port, STRANGERS[1], b"", wait=0.2)
        after = door.status()
    assert burst == [0] * len(burst)
    assert mid["rate_limited"] - before["rate_limited"] == 6
    assert after["rate_limited"] == mid["rate_limited"]  # another source has its own budget


async def test_idle_connections_from_many_sources_cannot_turn_the_genuine_peer_away(sides):
    """More idle connections than the table holds, all opened just before the genuine peer dials:
    it is let in at once, not after the handshake deadline (5 s) has cut the idle ones."""
    uk, belgium = sides
    responder = belgium.agent(uk, dial=False)
    genuine = uk.agent(belgium)
    async with running(responder):
        held = []
        try:
            for batch in await asyncio.gather(*(hold(belgium.port, source, 4) for source in STRANGERS)):
                held += batch
            await asyncio.sleep(0.3)
            async with running(genuine):
                await until(lambda: genuine.links.is_up(belgium.id)
                            and genuine.peers.get(belgium.id).ring.current is not None,
                            "uk's link with belgium while strangers hold idle connections", limit=4.0)
        finally:
            for s in held:
                s.close()
