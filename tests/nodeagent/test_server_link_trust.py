"""What the agent takes from its server (attack 18, issue 9 items 3b and 8), against a scripted
websocket server on loopback: only netmaps its network's CA signed, for itself, also from its own
netmap.json; certificates renewed at two thirds of their life, checked before they are kept."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent import identity
from nodeagent.enroll import write_private_file
from nodeagent.protocol import messages, netmap_sign
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.cert import issue_certificate, parse_certificate
from nodeagent.protocol.constants import CloseCode
from nodeagent.server_link import RenewalFailed, load_netmap, renew_certificate
from tests.nodeagent.test_server_link import CA_KEYS, B, C, make_map, persist, start, state_dir, stop

__all__ = ["state_dir"]  # the fixture, shared with test_server_link.py

EVIL = "e" * 40
MALLORY = mldsa.MLDSA87PrivateKey.generate()


def _evil_map(me: str, serial: int) -> nm.NetMap:
    """An impersonator's map: an extra peer, and all our traffic routed to it."""
    m = make_map(me, serial, [B, EVIL])
    return nm.NetMap(m.network, m.serial, m.node, m.peers, (nm.Route("0.0.0.0/0", EVIL),))


async def _until(predicate, timeout: float = 10.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(poll(), timeout)


# ---------------------------------------------------------------- signed netmaps

async def test_a_map_the_ca_did_not_sign_is_refused_and_nothing_changes(state_dir, caplog):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    persist(state_dir, make_map(me, 3, [B]))
    before = (state_dir / "netmap.json").read_bytes()
    closes = []

    async def script(ws, n):
        await ws.send(messages.encode(messages.sign_full(_evil_map(me, 9), MALLORY)))
        await ws.wait_closed()
        closes.append(ws.close_code)

    quick = {"sleep": lambda d: asyncio.sleep(0.05)}
    _fake, server, link, task, applied, _ = await start(state_dir, script, **quick)
    try:
        await _until(lambda: len(closes) >= 2)  # refused, reconnected, refused again
        assert closes[0] == CloseCode.BAD_SIGNATURE
        assert [m.serial for m in applied] == [3]  # only the persisted map, at start
        assert link.netmap == make_map(me, 3, [B]) and link.refused >= 2
        assert (state_dir / "netmap.json").read_bytes() == before
        assert "not signed by this network's CA" in caplog.text
    finally:
        await stop(server, task)


async def test_a_delta_the_ca_did_not_sign_is_refused_after_a_good_map(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    m5 = make_map(me, 5, [B])

    async def script(ws, n):
        if n == 1:
            await ws.send(fake.full(m5))
            evil = nm.diff(m5, _evil_map(me, 6))
            await ws.send(messages.encode(messages.sign_delta(evil, MALLORY)))
        await fake.pump(ws)

    fake, server, link, task, applied, _ = await start(state_dir, script, sleep=lambda d: asyncio.sleep(0.05))
    try:
        assert (await fake.next_message(messages.Ack)).serial == 5
        await _until(lambda: link.refused == 1 and fake.connections == 2)
        assert applied == [m5] and link.netmap == m5
        assert load_netmap(state_dir) == m5
    finally:
        await stop(server, task)


async def test_a_signed_map_for_another_node_is_refused(state_dir):
    """A man in the middle replays a genuine map of another node of the network."""
    other = make_map("f" * 40, 8, [B])

    async def script(ws, n):
        await ws.send(fake.full(other))
        await ws.wait_closed()

    fake, server, link, task, applied, _ = await start(state_dir, script, sleep=lambda d: asyncio.sleep(0.05))
    try:
        await _until(lambda: link.refused >= 1)
        assert applied == [] and link.netmap is None and not (state_dir / "netmap.json").exists()
    finally:
        await stop(server, task)


def test_a_persisted_map_is_verified_on_load(state_dir, caplog):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    persist(state_dir, make_map(me, 3, [B]))
    assert load_netmap(state_dir) == make_map(me, 3, [B])
    doc = json.loads((state_dir / "netmap.json").read_text())
    # edited by hand: our traffic to an extra peer, the CA's signature left in place
    doc["netmap"]["body"] = netmap_sign.chain_to_dict(netmap_sign.SignedChain(netmap_sign.SignedPart(
        b"netmap", messages.sign_full(_evil_map(me, 3), MALLORY).body, b"")))["netmap"]["body"]
    write_private_file(state_dir / "netmap.json", json.dumps(doc).encode())
    assert load_netmap(state_dir) is None
    assert "refusing persisted netmap" in caplog.text
    # the unsigned form an agent of the previous version wrote
    write_private_file(state_dir / "netmap.json", json.dumps(nm.netmap_to_dict(_evil_map(me, 3))).encode())
    assert load_netmap(state_dir) is None


async def test_a_tampered_persisted_map_is_not_applied_at_start(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    write_private_file(state_dir / "netmap.json", json.dumps(nm.netmap_to_dict(_evil_map(me, 3))).encode())

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 4, [B])))
        await fake.pump(ws)

    fake, server, _link, task, applied, _ = await start(state_dir, script)
    try:
        assert (await fake.next_message(messages.Ack)).serial == 4
        assert [m.serial for m in applied] == [4]  # nothing from the file
    finally:
        await stop(server, task)


async def test_deltas_are_persisted_as_a_signed_chain(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    maps = [make_map(me, 10 + i, [B] if i % 2 else [B, C]) for i in range(4)]

    async def script(ws, n):
        await ws.send(fake.full(maps[0]))
        for old, new in itertools.pairwise(maps):
            await ws.send(fake.delta(nm.diff(old, new)))
        await fake.pump(ws)

    fake, server, link, task, _applied, _ = await start(state_dir, script)
    try:
        await _until(lambda: link.netmap == maps[-1])
        doc = json.loads((state_dir / "netmap.json").read_text())
        assert len(doc["deltas"]) == 3
        assert load_netmap(state_dir) == maps[-1]
    finally:
        await stop(server, task)


async def test_a_long_chain_asks_once_for_a_fresh_full_map(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    maps = [make_map(me, 10 + i, [B] if i % 2 else [B, C]) for i in range(40)]

    resyncs = []

    async def script(ws, n):
        await ws.send(fake.full(maps[0]))
        for old, new in itertools.pairwise(maps):
            await ws.send(fake.delta(nm.diff(old, new)))
        async for frame in ws:  # a resync is answered with the current full map, as the server does
            msg = messages.decode_agent_message(frame)
            if isinstance(msg, messages.Resync):
                resyncs.append(msg.serial)
                await ws.send(fake.full(maps[-1]))

    fake, server, link, task, _applied, _ = await start(state_dir, script)
    try:
        await _until(lambda: resyncs and link.netmap == maps[-1] and not link.chain.deltas)
        assert 16 <= link.chain_limit < 32 and resyncs == [maps[link.chain_limit].serial]
        assert load_netmap(state_dir) == maps[-1]
        doc = json.loads((state_dir / "netmap.json").read_text())
        assert doc["deltas"] == [] and doc["format"] == netmap_sign.CHAIN_FORMAT
    finally:
        await stop(server, task)


# ---------------------------------------------------------------- certificate renewal

def _write_cert(state_dir, not_before: int, not_after: int, key=None, ip="10.10.10.2") -> bytes:
    ours = identity.load_private_key(state_dir / "node.key").public_key
    public = key.public_key().public_bytes_raw() if key else ours
    cert = issue_certificate(CA_KEYS[state_dir], public_key=public, name="belgium",
                             network="default", overlay_ip=ip, prefix_len=24, flags=0,
                             not_before=not_before, not_after=not_after)
    return cert


class Renewer:
    """A server side that answers `renew` with what `issue()` returns."""

    def __init__(self, state_dir, issue):
        self.state_dir, self.issue, self.requests = state_dir, issue, 0

    async def script(self, ws, n, fake, me):
        await ws.send(fake.full(make_map(me, 1, [B])))
        async for frame in ws:
            msg = messages.decode_agent_message(frame)
            if isinstance(msg, messages.Renew):
                self.requests += 1
                await ws.send(messages.encode(messages.CertificateIssued(self.issue())))
            await fake.received.put(msg)


async def test_the_agent_renews_at_two_thirds_of_its_certificates_lifetime(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    now = [1_000_000.0]
    # 30 s of life from 999_990: due at 1_000_010
    write_private_file(state_dir / "node.crt", _write_cert(state_dir, 999_990, 1_000_020))
    renewed: list[bytes] = []
    server_side = Renewer(state_dir, lambda: _write_cert(state_dir, int(now[0]), int(now[0]) + 30))
    holder = {}

    async def script(ws, n):
        await server_side.script(ws, n, holder["fake"], me)

    fake, server, link, task, _applied, _ = await start(state_dir, script, stats_interval=0.02,
                                                       on_certificate=renewed.append, clock=lambda: now[0])
    holder["fake"] = fake
    try:
        await fake.next_message(messages.Ack)
        await asyncio.sleep(0.3)
        assert server_side.requests == 0  # 10 s into 30: not yet
        now[0] = 1_000_010.0
        await _until(lambda: renewed)
        new = parse_certificate(renewed[0])
        assert (new.not_before, new.not_after) == (1_000_010, 1_000_040)
        assert (state_dir / "node.crt").read_bytes() == renewed[0]
        assert link.state.certificate == renewed[0] and server_side.requests == 1
        await asyncio.sleep(0.3)
        assert server_side.requests == 1  # the new one is not due before 1_000_030
    finally:
        await stop(server, task)


@pytest.mark.parametrize("bad", ["another key", "another address", "another CA", "shorter"])
async def test_a_renewed_certificate_that_is_not_ours_is_not_kept(state_dir, bad):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    now = 1_000_015.0
    original = _write_cert(state_dir, 999_990, 1_000_020)
    write_private_file(state_dir / "node.crt", original)

    def issue():
        if bad == "another key":
            return _write_cert(state_dir, int(now), int(now) + 30, key=mldsa.MLDSA87PrivateKey.generate())
        if bad == "another address":
            return _write_cert(state_dir, int(now), int(now) + 30, ip="10.10.10.99")
        if bad == "another CA":
            ident = identity.load_private_key(state_dir / "node.key")
            return issue_certificate(MALLORY, public_key=ident.public_key, name="belgium", network="default",
                                     overlay_ip="10.10.10.2", prefix_len=24, flags=0,
                                     not_before=int(now), not_after=int(now) + 30)
        return _write_cert(state_dir, int(now) - 1, 1_000_019)

    renewed = []
    server_side = Renewer(state_dir, issue)
    holder = {}

    async def script(ws, n):
        await server_side.script(ws, n, holder["fake"], me)

    fake, server, link, task, _applied, _ = await start(state_dir, script, stats_interval=0.02,
                                                       on_certificate=renewed.append, clock=lambda: now)
    holder["fake"] = fake
    try:
        await _until(lambda: server_side.requests >= 1)
        await asyncio.sleep(0.2)
        assert renewed == [] and (state_dir / "node.crt").read_bytes() == original
        assert link.state.certificate == original
    finally:
        await stop(server, task)


async def test_an_expired_certificate_is_renewed_in_one_exchange(state_dir):
    from websockets.asyncio.server import serve

    from tests.nodeagent.test_server_link import FakeServer

    ident = identity.load_private_key(state_dir / "node.key")
    now = int(time.time())
    write_private_file(state_dir / "node.crt", _write_cert(state_dir, now - 40, now - 10))  # expired
    fake = FakeServer(ident.public_key, CA_KEYS[state_dir])

    async def script(ws, n):
        await ws.send(fake.full(make_map(ident.peer_id, 1, [B])))  # the server sends its map first
        msg = messages.decode_agent_message(await ws.recv())
        assert isinstance(msg, messages.Renew)
        await ws.send(messages.encode(messages.CertificateIssued(_write_cert(state_dir, now, now + 3600))))
        await ws.wait_closed()

    fake.script = script
    server = await serve(fake.handler, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/agent/"
    try:
        new = await renew_certificate(state_dir, url=url)
        assert parse_certificate(new).not_after == now + 3600
        assert (state_dir / "node.crt").read_bytes() == new
    finally:
        server.close()
        await server.wait_closed()


async def test_renewal_fails_clearly_when_the_server_refuses(state_dir):
    from websockets.asyncio.server import serve

    from tests.nodeagent.test_server_link import FakeServer

    ident = identity.load_private_key(state_dir / "node.key")
    fake = FakeServer(ident.public_key, CA_KEYS[state_dir])

    async def script(ws, n):
        await ws.close(CloseCode.REVOKED, "this node has been revoked")

    fake.script = script
    server = await serve(fake.handler, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/agent/"
    try:
        with pytest.raises(RenewalFailed, match="4403"):
            await renew_certificate(state_dir, url=url)
        with pytest.raises(RenewalFailed):
            await renew_certificate(state_dir, url="ws://127.0.0.1:1/ws/agent/", timeout=5)
    finally:
        server.close()
        await server.wait_closed()


def test_a_persisted_map_nested_too_deeply_for_json_is_ignored_not_raised(state_dir, caplog):
    # found writing the fuzz harness of the persisted map (fuzz/fuzz_messages.py, mode 4):
    # json.loads raised RecursionError out of the loader
    write_private_file(state_dir / "netmap.json", b"[" * 100_000)
    assert load_netmap(state_dir) is None
    assert "ignoring persisted netmap" in caplog.text
