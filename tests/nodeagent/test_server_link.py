"""The agent's server link against a scripted websocket server on loopback (no Django).

Covers: challenge signing, full map then deltas, stale serial ignored, gap -> re-sync, the last map
persisted (0600) and replayed at start, reconnect after a drop, revocation ends the link, stats
sent, and the reconnect backoff schedule as a pure function."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa
from websockets.asyncio.server import serve

import nodeagent
from nodeagent import identity
from nodeagent.delayed_ack import ACK_DELAY_S, DelayedAck, ack_delay
from nodeagent.enroll import write_private_file
from nodeagent.protocol import messages, netmap_sign
from nodeagent.protocol import netmap as nm
from nodeagent.protocol.auth import verify_agent_login
from nodeagent.protocol.cert import issue_certificate
from nodeagent.protocol.constants import CloseCode
from nodeagent.protocol.counters import PeerCounters
from nodeagent.server_link import BACKOFF_CAP_S, ServerLink, backoff_delay, is_current_answer, load_netmap

B, C = "b" * 40, "c" * 40
FP = "e" * 64


# ---------------------------------------------------------------- backoff (pure)

@pytest.mark.parametrize(
    ("attempt", "rnd", "expected"),
    [
        (0, 0.0, 0.25),     # 1 half of the 0.5 s base
        (0, 0.5, 0.375),    # 2 jitter fills the other half
        (1, 0.0, 0.5),      # 3 doubles
        (2, 0.0, 1.0),      # 4
        (3, 0.0, 2.0),      # 5
        (4, 0.0, 4.0),      # 6 nominal 8 s = the cap
        (5, 0.0, 4.0),      # 7 capped
        (60, 0.0, 4.0),     # 8 huge attempt counts do not overflow
    ],
)
def test_backoff_grows_exponentially_to_a_cap_with_jitter(attempt, rnd, expected):
    assert backoff_delay(attempt, rnd) == pytest.approx(expected)


def test_backoff_never_exceeds_the_cap_and_spreads_agents():
    delays = [backoff_delay(10, r / 100) for r in range(100)]
    assert max(delays) < BACKOFF_CAP_S and min(delays) == BACKOFF_CAP_S / 2
    assert len(set(delays)) == 100


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        backoff_delay(-1, 0.0)
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0)


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def state_dir(tmp_path):
    ident = identity.generate(tmp_path)
    ca = mldsa.MLDSA87PrivateKey.generate()
    cert = issue_certificate(ca, public_key=ident.public_key, name="belgium", network="default",
                             overlay_ip="10.10.10.2", prefix_len=24, flags=0, not_before=0,
                             not_after=2**40)
    write_private_file(tmp_path / "node.crt", cert)
    write_private_file(tmp_path / "ca.pub", ca.public_key().public_bytes_raw())
    write_private_file(tmp_path / "server.json", json.dumps({
        "server": "http://127.0.0.1:1", "peer_id": ident.peer_id, "name": "belgium",
        "overlay_ip": "10.10.10.2", "network": "default"}).encode())
    CA_KEYS[tmp_path] = ca  # the fake server signs with it (a real server keeps it sealed)
    return tmp_path


CA_KEYS: dict = {}


def persist(state_dir, netmap: nm.NetMap) -> None:
    """Write `netmap` as the agent persists it: signed by the state dir's CA."""
    full = messages.sign_full(netmap, CA_KEYS[state_dir])
    chain = netmap_sign.SignedChain(netmap_sign.SignedPart(netmap_sign.LABEL_FULL, full.body, full.signature))
    write_private_file(state_dir / "netmap.json", json.dumps(netmap_sign.chain_to_dict(chain)).encode())


def make_map(peer_id: str, serial: int, peers=()) -> nm.NetMap:
    return nm.NetMap(network="default", serial=serial,
                     node=nm.SelfInfo(peer_id=peer_id, name="belgium", overlay_ip="10.10.10.2",
                                      prefix_len=24),
                     peers=tuple(nm.Peer(peer_id=p, name="p" + p[0], overlay_ip=f"10.10.10.{i + 3}",
                                         fingerprint=FP) for i, p in enumerate(peers)))


class FakeServer:
    """Runs `script(ws, conn_no)` after checking the agent's signed answer to a challenge."""

    def __init__(self, public_key: bytes, ca):
        self.public_key = public_key
        self.ca = ca
        self.ca_public_key = ca.public_key().public_bytes_raw()
        self.received: asyncio.Queue = asyncio.Queue()
        self.connections = 0
        self.script = None
        self.auths: list[messages.Auth] = []

    async def handler(self, ws):
        self.connections += 1
        nonce = bytes(range(32))
        await ws.send(messages.encode(messages.Challenge(nonce)))
        auth = messages.decode_agent_message(await ws.recv())
        assert isinstance(auth, messages.Auth)
        self.auths.append(auth)
        verify_agent_login(self.public_key, self.ca_public_key, nonce, auth.signature)  # raises if wrong
        await self.script(ws, self.connections)

    def full(self, netmap: nm.NetMap) -> bytes:
        return messages.encode(messages.sign_full(netmap, self.ca))

    def delta(self, delta: nm.NetMapDelta) -> bytes:
        return messages.encode(messages.sign_delta(delta, self.ca))

    async def next_message(self, kind):
        while True:
            msg = await asyncio.wait_for(self.received.get(), 10)
            if isinstance(msg, kind):
                return msg

    async def pump(self, ws):
        async for frame in ws:
            await self.received.put(messages.decode_agent_message(frame))


def recording_sleep():
    """A sleep that returns at once and records each delay the link asked for (its backoff)."""
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(0)

    return delays, sleep


async def start(state_dir, script, **kw):
    ident = identity.load_private_key(state_dir / "node.key")
    fake = FakeServer(ident.public_key, CA_KEYS[state_dir])
    fake.script = script
    server = await serve(fake.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    applied: list[nm.NetMap] = []
    got = asyncio.Event()

    def on_netmap(m):
        applied.append(m)
        got.set()

    kw.setdefault("ack_delay", (0.0, 0.0))  # acks at once, one per map (the delay: its own tests)
    link = ServerLink(state_dir, on_netmap, url=f"ws://127.0.0.1:{port}/ws/agent/", **kw)
    task = asyncio.create_task(link.run())
    return fake, server, link, task, applied, ident.peer_id


async def stop(server, task):
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()
    await server.wait_closed()


# ---------------------------------------------------------------- behaviour

async def test_the_link_signs_the_challenge_applies_the_full_map_and_persists_it(state_dir):
    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 5, [B])))
        await fake.pump(ws)

    me = identity.load_private_key(state_dir / "node.key").peer_id
    fake, server, _link, task, applied, _ = await start(state_dir, script)
    try:
        ack = await fake.next_message(messages.Ack)
        assert ack.serial == 5
        assert [m.serial for m in applied] == [5]
        path = state_dir / "netmap.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_netmap(state_dir) == make_map(me, 5, [B])
    finally:
        await stop(server, task)


async def test_a_stale_map_is_ignored_and_a_delta_applies(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    m5, m7 = make_map(me, 5, [B]), make_map(me, 7, [B, C])

    async def script(ws, n):
        await ws.send(fake.full(m5))
        await ws.send(fake.full(make_map(me, 4, [])))       # older: ignored
        older = nm.diff(make_map(me, 3, []), make_map(me, 4, [C]))
        await ws.send(fake.delta(older))  # older
        await ws.send(fake.delta(nm.diff(m5, m7)))
        await fake.pump(ws)

    fake, server, link, task, applied, _ = await start(state_dir, script)
    try:
        assert (await fake.next_message(messages.Ack)).serial == 5
        assert (await fake.next_message(messages.Ack)).serial == 7
        assert [m.serial for m in applied] == [5, 7]
        assert applied[-1] == m7
        assert link.stale_ignored == 2
    finally:
        await stop(server, task)


async def test_a_gap_in_the_deltas_asks_for_a_full_resync(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    m5, m8, m9 = make_map(me, 5, [B]), make_map(me, 8, [C]), make_map(me, 9, [B, C])

    async def script(ws, n):
        await ws.send(fake.full(m5))
        await ws.send(fake.delta(nm.diff(m8, m9)))  # base 8 != applied 5
        resync = messages.decode_agent_message(await ws.recv())
        while not isinstance(resync, messages.Resync):
            resync = messages.decode_agent_message(await ws.recv())
        await fake.received.put(resync)
        await ws.send(fake.full(m9))
        await fake.pump(ws)

    fake, server, link, task, applied, _ = await start(state_dir, script)
    try:
        assert (await fake.next_message(messages.Resync)).serial == 5
        assert (await fake.next_message(messages.Ack)).serial == 9
        assert [m.serial for m in applied] == [5, 9] and link.resyncs == 1
    finally:
        await stop(server, task)


async def test_the_persisted_map_is_applied_at_start_and_the_link_reconnects_after_a_drop(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    persist(state_dir, make_map(me, 3, [B]))
    delays, fast_sleep = recording_sleep()

    async def script(ws, n):
        if n == 1:
            await ws.close(1011, "server going away")
            return
        await ws.send(fake.full(make_map(me, 6, [B, C])))
        await fake.pump(ws)

    fake, server, link, task, applied, _ = await start(state_dir, script, sleep=fast_sleep)
    try:
        assert (await fake.next_message(messages.Ack)).serial == 6
        assert [m.serial for m in applied] == [3, 6]  # the persisted one first, before any server
        assert fake.connections == 2 and len(delays) == 1
        assert link.attempt == 0  # reset after a successful session
    finally:
        await stop(server, task)


async def test_a_revoked_close_ends_the_link(state_dir):
    async def script(ws, n):
        await ws.close(CloseCode.REVOKED, "node revoked")

    fake, server, link, task, _applied, _ = await start(state_dir, script, sleep=lambda d: asyncio.sleep(0))
    try:
        await asyncio.wait_for(task, 10)
        assert link.revoked and fake.connections == 1
    finally:
        await stop(server, task)


async def test_the_agents_counter_report_is_sent_as_it_was_built(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 1, [B])))
        await fake.pump(ws)

    status = messages.Stats(12.0, (PeerCounters(B, "direct", 0.8, 10, 9, 1000, 900, 1, 0, 0, 3.0),))
    endpoints = (nm.Endpoint("198.18.0.2", 8443, 9443),)
    fake, server, _link, task, _applied, _ = await start(
        state_dir, script, stats_source=lambda: status, endpoints=endpoints, stats_interval=0.05)
    try:
        report = await fake.next_message(messages.EndpointReport)
        assert report.endpoints == endpoints
        assert report.agent_version == nodeagent.__version__ != "0+unknown"
        stats = await fake.next_message(messages.Stats)
        assert stats.uptime_s == 12.0
        assert stats.peers == (PeerCounters(B, "direct", 0.8, 10, 9, 1000, 900, 1, 0, 0, 3.0),)
    finally:
        await stop(server, task)


async def test_a_corrupt_persisted_map_is_ignored(state_dir):
    (state_dir / "netmap.json").write_text("{not json")
    assert load_netmap(state_dir) is None
    me = identity.load_private_key(state_dir / "node.key").peer_id
    bad = nm.netmap_to_dict(replace(make_map(me, 1), network="x"))
    bad["serial"] = -4
    (state_dir / "netmap.json").write_text(json.dumps(bad))
    assert load_netmap(state_dir) is None


async def test_a_bad_counter_report_is_skipped_and_the_link_stays_up(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 1, [B])))
        await fake.pump(ws)

    reports = iter([messages.Stats(1.0, (PeerCounters("NOT-A-PEER"),)),
                    messages.Stats(2.0, (PeerCounters(B, "sideways"),))])
    good = messages.Stats(3.0, ())
    fake, server, _link, task, _applied, _ = await start(
        state_dir, script, stats_source=lambda: next(reports, good), stats_interval=0.05)
    try:
        stats = await fake.next_message(messages.Stats)
        assert stats.uptime_s == 3.0 and fake.connections == 1
    finally:
        await stop(server, task)


async def test_endpoints_are_reported_again_each_refresh_period_while_counters_flow(state_dir, monkeypatch):
    """The record's TTL is refreshed: the endpoint report repeats every PEER_RECORD_REFRESH_S
    (5 min; lowered here to 0.2 s), while counters go every stats interval."""
    import nodeagent.server_link as server_link

    monkeypatch.setattr(server_link, "PEER_RECORD_REFRESH_S", 0.2)
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 1, [B])))
        await fake.pump(ws)

    status = messages.Stats(1.0, ())
    endpoints = (nm.Endpoint("198.18.0.2", 8443, 9443),)
    fake, server, _link, task, _applied, _ = await start(
        state_dir, script, stats_source=lambda: status, endpoints=endpoints, stats_interval=0.05)
    try:
        kinds = []
        while kinds.count(messages.EndpointReport) < 2:
            msg = await asyncio.wait_for(fake.received.get(), 10)
            kinds.append(type(msg))
        # between the two endpoint reports, several counter reports went out
        between = kinds[kinds.index(messages.EndpointReport) + 1:-1]
        assert between.count(messages.Stats) >= 2, kinds
    finally:
        await stop(server, task)


async def test_a_rate_limited_close_waits_the_capped_delay_then_connects(state_dir):
    """The server closes with 4429 when our address opened too many sockets in a minute."""
    me = identity.load_private_key(state_dir / "node.key").peer_id
    delays, fast_sleep = recording_sleep()

    ident = identity.load_private_key(state_dir / "node.key")
    fake = FakeServer(ident.public_key, CA_KEYS[state_dir])
    refused = 0

    async def handler(ws):
        nonlocal refused
        if refused < 2:  # closed before any challenge, as AgentConsumer does
            refused += 1
            await ws.close(CloseCode.RATE_LIMITED, "too many connections from this address")
            return
        await fake.handler(ws)

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 2, [B])))
        await fake.pump(ws)

    fake.script = script
    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = ServerLink(state_dir, lambda m: None, url=f"ws://127.0.0.1:{port}/ws/agent/", sleep=fast_sleep,
                      rng=lambda: 0.0)
    task = asyncio.create_task(link.run())
    try:
        assert (await fake.next_message(messages.Ack)).serial == 2
        assert delays == [BACKOFF_CAP_S / 2, BACKOFF_CAP_S / 2]  # not the 0.25 s of a first retry
        assert link.attempt == 0
    finally:
        await stop(server, task)


async def test_a_rate_limited_close_after_the_login_waits_the_capped_delay_too(state_dir):
    """The server closes with 4429 after checking our answer when this node logged in too often
    in a minute (SHADOWMESH_AGENT_LOGIN_RATE): the same capped delay as before a challenge."""
    delays, fast_sleep = recording_sleep()

    async def script(ws, n):
        if n <= 2:
            await ws.close(CloseCode.RATE_LIMITED, "too many logins of node this minute; wait a minute")
            return
        await ws.send(fake.full(make_map(me, 3, [B])))
        await fake.pump(ws)

    fake, server, link, task, applied, me = await start(state_dir, script, sleep=fast_sleep,
                                                        rng=lambda: 0.0)
    try:
        assert (await fake.next_message(messages.Ack)).serial == 3
        assert len(fake.auths) == 3  # each refused connection had answered its challenge
        assert delays == [BACKOFF_CAP_S / 2, BACKOFF_CAP_S / 2]  # not the 0.25 s of a first retry
        assert link.attempt == 0 and applied[-1].serial == 3
    finally:
        await stop(server, task)


async def test_new_endpoints_are_reported_with_the_next_counters_not_after_the_refresh_period(state_dir):
    """The UDP candidates changed (traversal.py): the report goes out at the next send, once."""
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 1, [B])))
        await fake.pump(ws)

    status = messages.Stats(1.0, ())
    endpoints = (nm.Endpoint("198.18.0.2", 8443, 9443),)
    fake, server, link, task, _applied, _ = await start(
        state_dir, script, stats_source=lambda: status, endpoints=endpoints, stats_interval=0.05)
    try:
        assert (await fake.next_message(messages.EndpointReport)).endpoints == endpoints
        await fake.next_message(messages.Stats)
        more = (*endpoints, nm.Endpoint("198.19.0.10", 8443, 9443, "reflexive"))
        link.update_endpoints(more)
        link.update_endpoints(more)  # the same again: no second report
        assert (await fake.next_message(messages.EndpointReport)).endpoints == more
        kinds = [type(await asyncio.wait_for(fake.received.get(), 10)) for _ in range(5)]
        assert kinds == [messages.Stats] * 5
    finally:
        await stop(server, task)


# ---------------------------------------------------------------- naming the held serial at login

async def test_the_login_names_the_held_serial_and_a_current_answer_keeps_the_map(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    persist(state_dir, make_map(me, 3, [B]))
    before = (state_dir / "netmap.json").read_bytes()
    _, fast_sleep = recording_sleep()

    async def script(ws, n):
        if n == 1:
            await ws.close(1011, "server going away")
            return
        await ws.send(fake.delta(nm.NetMapDelta("default", 3, 3)))  # "your map is current"
        await fake.pump(ws)

    fake, server, link, task, applied, _ = await start(state_dir, script, sleep=fast_sleep)
    try:
        assert (await fake.next_message(messages.Ack)).serial == 3
        assert [a.serial for a in fake.auths] == [3, 3]
        assert link.connected.is_set() and link.attempt == 0 and link.resumed == 1
        assert [m.serial for m in applied] == [3]  # the persisted map, not applied again
        assert (state_dir / "netmap.json").read_bytes() == before  # no empty delta in the chain
    finally:
        await stop(server, task)


async def test_without_a_map_the_login_names_no_serial(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 5, [B])))
        await fake.pump(ws)

    fake, server, _link, task, _applied, _ = await start(state_dir, script)
    try:
        assert (await fake.next_message(messages.Ack)).serial == 5
        assert [a.serial for a in fake.auths] == [None]
    finally:
        await stop(server, task)


def test_only_an_empty_delta_from_the_held_serial_to_itself_is_the_current_answer():
    held = make_map("a" * 40, 3, [B])
    assert is_current_answer(held, nm.NetMapDelta("default", 3, 3))
    assert not is_current_answer(None, nm.NetMapDelta("default", 3, 3))
    assert not is_current_answer(held, nm.NetMapDelta("default", 3, 4))
    assert not is_current_answer(held, nm.NetMapDelta("default", 2, 2))
    assert not is_current_answer(held, nm.NetMapDelta("other", 3, 3))
    assert not is_current_answer(held, nm.NetMapDelta("default", 3, 3, remove=(B,)))


async def test_a_server_that_refuses_the_serial_field_gets_logins_without_it(state_dir):
    """A server older than the field parses `auth` strictly and closes the login as malformed."""
    me = identity.load_private_key(state_dir / "node.key").peer_id
    persist(state_dir, make_map(me, 3, [B]))

    async def script(ws, n):
        if fake.auths[-1].serial is not None:
            await ws.close(CloseCode.MALFORMED, "auth: unknown key(s) ['serial']")
            return
        await ws.send(fake.full(make_map(me, 6, [B, C])))
        await fake.pump(ws)

    fake, server, link, task, applied, _ = await start(state_dir, script, sleep=lambda d: asyncio.sleep(0))
    try:
        assert (await fake.next_message(messages.Ack)).serial == 6
        assert [a.serial for a in fake.auths] == [3, None]
        assert link.extended_login is False and [m.serial for m in applied] == [3, 6]
    finally:
        await stop(server, task)


async def test_the_agent_names_its_features_and_reports_as_often_as_the_server_asks(state_dir):
    """`telemetry` sets the interval between counter reports, counted from the last one: an agent
    left at its own interval (an hour here) would not send a second report in this test."""
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        await ws.send(fake.full(make_map(me, 5, [B])))
        await fake.pump(ws)

    fake, server, link, task, _applied, _ = await start(
        state_dir, script, stats_source=lambda: messages.Stats(1.0, ()), stats_interval=3600.0)
    try:
        await fake.next_message(messages.Stats)  # the first report, at once after the login
        assert fake.auths[0].features == (messages.FEATURE_TELEMETRY,)
        assert link.report_interval == 3600.0
        await asyncio.wait_for(_send(server, messages.Telemetry(1.0)), 5)
        await fake.next_message(messages.Stats)
        assert link.report_interval == 1.0 and link.server_interval == 1.0
    finally:
        await stop(server, task)


async def _send(server, msg) -> None:
    """Send `msg` to every agent connected to the fake server."""
    for conn in server.connections:
        await conn.send(messages.encode(msg))


async def test_a_server_that_refuses_the_features_field_gets_logins_without_it(state_dir):
    """A server older than `features` closes the login as malformed: the agent logs in without
    its optional fields from then on, and reports at its own interval."""
    me = identity.load_private_key(state_dir / "node.key").peer_id

    async def script(ws, n):
        if fake.auths[-1].features:
            await ws.close(CloseCode.MALFORMED, "auth: unknown key(s) ['features']")
            return
        await ws.send(fake.full(make_map(me, 6, [B])))
        await fake.pump(ws)

    fake, server, link, task, _applied, _ = await start(state_dir, script, sleep=lambda d: asyncio.sleep(0))
    try:
        assert (await fake.next_message(messages.Ack)).serial == 6
        assert [a.features for a in fake.auths] == [(messages.FEATURE_TELEMETRY,), ()]
        assert link.extended_login is False and link.server_interval is None
    finally:
        await stop(server, task)


async def test_maps_applied_within_the_ack_delay_are_acknowledged_once_with_the_newest_serial(state_dir):
    """The agent applies every map at once but answers a burst with one ack, after its delay."""
    me = identity.load_private_key(state_dir / "node.key").peer_id
    m5, m7, m8 = make_map(me, 5, [B]), make_map(me, 7, [B, C]), make_map(me, 8, [C])

    async def script(ws, n):
        await ws.send(fake.full(m5))
        await ws.send(fake.delta(nm.diff(m5, m7)))
        await ws.send(fake.delta(nm.diff(m7, m8)))
        await fake.pump(ws)

    fake, server, _link, task, applied, _ = await start(state_dir, script, ack_delay=(0.2, 0.2))
    try:
        assert (await fake.next_message(messages.Ack)).serial == 8
        assert [m.serial for m in applied] == [5, 7, 8]  # applied before the ack went
        await asyncio.sleep(0.5)
        assert fake.received.empty()  # no ack for 5 or 7, before or after
    finally:
        await stop(server, task)


async def test_a_link_that_closes_before_its_ack_is_due_drops_it_and_acknowledges_the_next_login(state_dir):
    me = identity.load_private_key(state_dir / "node.key").peer_id
    m5 = make_map(me, 5, [B])
    acks: list[tuple[int, int]] = []  # (connection, serial acknowledged)
    second = asyncio.Event()

    async def script(ws, n):
        await ws.send(fake.full(m5))

        async def record():
            async for frame in ws:
                msg = messages.decode_agent_message(frame)
                if isinstance(msg, messages.Ack):
                    acks.append((n, msg.serial))
                    second.set()

        if n == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(record(), 0.1)  # listens, then closes before the ack is due
            await ws.close()
            return
        await record()

    fake, server, _link, task, _applied, _ = await start(state_dir, script, ack_delay=(0.3, 0.3))
    try:
        await asyncio.wait_for(second.wait(), 10)
        assert acks == [(2, 5)]  # none on the first connection; the login after it is acknowledged
    finally:
        await stop(server, task)


@pytest.mark.parametrize(("rnd", "expected"), [(0.0, 1.5), (0.5, 2.25), (0.999, 2.9985)])
def test_the_ack_delay_spreads_a_fleet_over_its_bounds(rnd, expected):
    assert ack_delay(rnd) == pytest.approx(expected)


def test_the_ack_delay_refuses_nonsense():
    for rnd, bounds in ((1.0, ACK_DELAY_S), (-0.1, ACK_DELAY_S), (0.5, (2.0, 1.0)), (0.5, (-1.0, 1.0))):
        with pytest.raises(ValueError):
            ack_delay(rnd, bounds)


async def test_a_pending_ack_carries_the_newest_serial_even_when_they_come_out_of_order():
    sent: list[int] = []

    async def send(serial: int) -> None:
        sent.append(serial)

    acks = DelayedAck(send, lambda: 0.0, (0.05, 0.05))
    await acks.ack(7)
    await acks.ack(9)
    await acks.ack(8)
    await asyncio.sleep(0.2)
    assert sent == [9] and acks.merged == 2
    await acks.ack(10)  # a new wait after the last ack went
    await acks.close()  # dropped
    await asyncio.sleep(0.1)
    assert sent == [9]


async def test_an_ack_that_cannot_be_sent_is_dropped_without_an_error():
    async def send(serial: int) -> None:
        raise ConnectionError("closed")

    acks = DelayedAck(send, lambda: 0.0, (0.01, 0.01))
    await acks.ack(3)
    await asyncio.sleep(0.1)
    assert acks.sent == 0
    await acks.close()
