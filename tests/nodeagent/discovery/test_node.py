"""The DHT node over loopback TCP: nodes store and find records, learn a changed record, spread
the CA's revocation list; and the attacks on the I/O edge: Sybil requesters and fabricated
contacts (never in a table), oversized and malformed frames, slow-loris connections, too many
connections, request floods, a responder that never answers or is not who it claims."""

from __future__ import annotations

import asyncio
import random
import struct
import sys
import time
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from nodeagent.discovery.budget import SourceBudgets
from nodeagent.discovery.config import DhtConfig
from nodeagent.discovery.ids import addr_key, revocations_key
from nodeagent.discovery.messages import (
    Error,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Value,
    WireContact,
    decode,
    encode,
    frame_length,
)
from nodeagent.discovery.node import Seed
from nodeagent.discovery.records import (
    KIND_LOCAL,
    Candidate,
    RecordError,
    build_node_record,
    build_revocation_list,
)
from nodeagent.protocol.cert import ca_id
from nodeagent.protocol.netmap import Endpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import dht_sim

CONFIG = DhtConfig(allow_loopback=True, maintenance_s=3600)
STRICT = replace(CONFIG, first_frame_s=0.5, frame_s=0.5, max_connections_per_source=4,
                 request_rate=5.0, request_burst=40.0)  # set on the attacked node only
_BASE = random.Random().randrange(150, 250)  # a loopback /16 of our own per test run


async def mesh_of(n, config=CONFIG, base=_BASE):
    return await dht_sim.build_mesh(n, config=config, seeds=2, concurrency=4, ip_base=base)


@pytest.fixture
async def mesh():
    m = await mesh_of(6)
    yield m
    await m.close()


async def raw_connection(member, source_ip):
    return await asyncio.open_connection(member.ip, member.port, local_addr=(source_ip, 0))


async def read_answer(reader):
    header = await asyncio.wait_for(reader.readexactly(4), 10)
    return decode(await asyncio.wait_for(reader.readexactly(frame_length(header)), 10))


async def closed_by_peer(reader, within=10.0):
    """True once the peer closes the connection (reads until EOF; no timing is asserted)."""
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except (ConnectionError, TimeoutError):
        return False
    return True


# ---------------------------------------------------------------------------- the happy paths


async def test_nodes_store_and_find_each_others_records(mesh):
    for member in mesh.members:
        assert len(member.node.table) >= len(mesh.members) - 2  # everyone found (nearly) everyone
    for src in mesh.members:
        for dst in mesh.members:
            if src is dst:
                continue
            rec = await src.node.find_record(dst.node.peer_id)
            assert rec is not None and rec.peer_id == dst.node.peer_id
            assert rec.endpoints[0].control_port == dst.port
            by_ip = await src.node.find_by_overlay_ip(str(dst.node.overlay_ip))
            assert by_ip is not None and by_ip.peer_id == dst.node.peer_id
    # records are held by others, under both keys
    holders = [m for m in mesh.members if mesh.members[3].node_id in m.node.store]
    assert len(holders) >= 3
    assert any(addr_key(mesh.members[3].node.overlay_ip) in m.node.store for m in mesh.members)
    status = mesh.members[0].node.status()
    assert status["contacts"] >= 4 and status["records"] >= 1 and status["lookups"] > 0
    assert status["last_publish_s"] is not None and status["failures"] == 0


async def test_a_node_learns_a_changed_record(mesh):
    mover, watcher = mesh.members[4], mesh.members[1]
    before = await watcher.node.find_record(mover.node.peer_id)
    learned = []
    watcher.node.on_record = learned.append
    mover.node.set_candidates([Candidate(Endpoint(mover.ip, mover.port, 9555)),
                               Candidate(Endpoint("198.18.44.4", 8443, 9443), kind=KIND_LOCAL)])
    assert await mover.node.publish() >= 2
    after = await watcher.node.find_record(mover.node.peer_id)
    assert after.sequence > before.sequence
    assert [e.udp_port for e in after.endpoints] == [9555, 9443]
    assert after.candidates[1].kind == KIND_LOCAL
    assert after.endpoints[1].source == "local"
    assert learned and learned[-1].sequence == after.sequence


async def test_the_ca_revocation_list_spreads_and_revoked_nodes_are_dropped(mesh):
    """Only one node gets the CA's list (as if from the server, which then goes away); it stores
    it in the DHT; another node, with its own revoked set, fetches it and drops the node."""
    victim = mesh.members[5]
    now = int(time.time())
    lst = build_revocation_list(mesh.ca.sign, ca_public_key=mesh.ca_public, sequence=7, issued=now,
                                expires=now + 3600, revoked=[victim.node.peer_id])
    key = revocations_key(ca_id(mesh.ca_public))
    assert await mesh.members[0].node._store_at_nearest(key, lst) >= 3
    holders = [m for m in mesh.members if key in m.node.store]
    assert len(holders) >= 3
    for h in holders:  # a holder checked the list and applied it
        assert victim.node.peer_id in h.node.revoked
        assert victim.node_id not in h.node.table
    # a node that joins now, with its own empty revoked set, learns it while joining
    newcomer = await dht_sim.add_member(mesh, 50, CONFIG, _BASE)
    assert victim.node.peer_id not in newcomer.node.revoked
    await newcomer.node.bootstrap([dht_sim.Seed(mesh.members[0].ip, mesh.members[0].port, None)])
    assert victim.node.peer_id in newcomer.node.revoked and newcomer.node.revoked.latest.sequence == 7
    assert victim.node_id not in newcomer.node.table
    assert await newcomer.node.find_record(victim.node.peer_id) is None
    fetched = await newcomer.node.fetch_revocations()
    assert fetched is not None and fetched.sequence == 7
    other = newcomer
    # the list lives on with the nodes: `other` stores it again when it republishes
    for h in holders:
        h.node.store = type(h.node.store)(h.node.node_id, h.node.verifier.verify)  # forget it
    assert await other.node.publish() >= 3
    assert sum(key in m.node.store for m in mesh.members) >= 3


async def test_a_holder_serves_the_newest_record_it_has_seen(mesh):
    """A node that moved may fail to STORE its new record everywhere (its first requests go out on
    connections from its old address); a holder that sees the newer record any other way (here
    with a plain PING) replaces the copy it serves, under both keys."""
    mover = mesh.members[4]
    assert await mover.node.publish() >= 2
    assert mover.node.last_stored and all(mover.node.last_stored)
    holder = next(m for m in mesh.members if m is not mover and mover.node_id in m.node.store)
    mover.node.set_candidates([Candidate(Endpoint(mover.ip, mover.port, 9777))])
    newer = mover.node._sign_record(time.time())  # signed, stored nowhere
    reader, writer = await raw_connection(holder, mover.ip)
    writer.write(encode(Ping(3, me=newer.raw)))
    assert isinstance(await read_answer(reader), Pong)
    writer.close()
    held = [k for k in newer.keys if k in holder.node.store]
    assert held
    for key in held:
        assert holder.node.store.get(key, time.time()).sequence == newer.sequence


async def test_a_list_from_the_server_is_applied_served_and_spread(mesh):
    """The agent hands the list its netmap carried to learn_revocations: applied at once (the
    callback hears the new ids), answered from this node even though nobody stored it here, and
    stored at the nearest nodes by spread_revocations; an older list is applied but not 'newer'."""
    holder, victim, asker = mesh.members[0], mesh.members[5], mesh.members[2]
    heard = []
    holder.node.on_revoked = heard.append
    now = int(time.time())
    lst = build_revocation_list(mesh.ca.sign, ca_public_key=mesh.ca_public, sequence=9, issued=now,
                                expires=now + 3600, revoked=[victim.node.peer_id])
    key = revocations_key(ca_id(mesh.ca_public))
    assert holder.node.learn_revocations(lst) is True
    assert heard == [{victim.node.peer_id}] and victim.node_id not in holder.node.table
    assert key not in holder.node.store  # served from the revoked set's newest list, not the store
    reader, writer = await raw_connection(holder, asker.ip)
    writer.write(encode(FindValue(5, key)))
    answer = await read_answer(reader)
    writer.close()
    assert isinstance(answer, Value) and answer.rec == lst
    assert await holder.node.spread_revocations() >= 3
    assert sum(key in m.node.store for m in mesh.members) >= 3
    older = build_revocation_list(mesh.ca.sign, ca_public_key=mesh.ca_public, sequence=8, issued=now,
                                  expires=now + 3600, revoked=[])
    assert holder.node.learn_revocations(older) is False
    assert holder.node.revoked.latest.sequence == 9
    with pytest.raises(RecordError):  # a list signed by anyone but the CA is refused
        holder.node.learn_revocations(build_revocation_list(
            asker.key.sign, ca_public_key=mesh.ca_public, sequence=10, issued=now, expires=now + 3600,
            revoked=[asker.node.peer_id]))
    with pytest.raises(RecordError):  # a node record is not a list
        holder.node.learn_revocations(asker.node.current_record())
    assert asker.node.peer_id not in holder.node.revoked


async def test_a_node_without_an_endpoint_publishes_nothing_but_still_asks(mesh):
    quiet = mesh.members[4]
    quiet.node.set_candidates([])
    assert await quiet.node.publish() == 0
    rec = await quiet.node.find_record(mesh.members[1].node.peer_id)
    assert rec is not None and rec.peer_id == mesh.members[1].node.peer_id


# ---------------------------------------------------------------------------- Sybil, eclipse


async def test_sybil_requesters_without_a_certificate_never_enter_a_table(mesh):
    """An outsider (its own CA) floods a node with requests carrying its records."""
    outsider_ca = mldsa.MLDSA87PrivateKey.generate()
    target = mesh.members[1]
    before = len(target.node.table)
    sybil_ids = []
    for n in range(6):
        key, cert, pid = dht_sim.make_identity(outsider_ca, 500 + n, int(time.time()))
        sybil_ids.append(bytes.fromhex(pid))
        me = build_node_record(key.sign, certificate=cert, sequence=1, issued=int(time.time()),
                               expires=int(time.time()) + 600,
                               candidates=[Candidate(Endpoint(f"127.{_BASE}.9.{n + 1}", 7000, 9443))],
                               allow_loopback=True)
        reader, writer = await raw_connection(target, f"127.{_BASE}.9.{n + 1}")
        writer.write(encode(FindNode(1, bytes(20), me=me)))
        answer = await read_answer(reader)
        assert isinstance(answer, Nodes)  # an outsider may read (docs/dht.md), never join
        writer.close()
    await asyncio.sleep(0.3)
    assert target.node.stats.refused.get("requester_wrong_ca", 0) == 6
    for m in mesh.members:
        assert not any(s in m.node.table for s in sybil_ids)
        assert not any(s in m.node.identities for s in sybil_ids)
    assert len(target.node.table) == before


async def test_fabricated_contacts_from_an_enrolled_liar_are_never_inserted(mesh):
    """An enrolled node that answers every lookup with 20 unenrolled ids "nearer" than anyone,
    half of them at its own address (where it answers for them, but cannot show their record):
    lookups still find the true k nearest, and no fabricated id enters any table."""
    liar = await dht_sim.add_member(mesh, 77, CONFIG, _BASE)  # a real, enrolled node...
    liar.node._listener.close()  # ...whose port is then served by this instead
    await liar.node._listener.wait_closed()
    fakes = [random.Random(n).randbytes(20) for n in range(20)]
    addresses = [(liar.ip, liar.port) if i % 2 else (f"127.{_BASE}.66.{i + 1}", 9) for i in range(20)]
    lies = []

    async def lie(reader, writer):
        try:
            while True:
                header = await reader.readexactly(4)
                msg = decode(await reader.readexactly(frame_length(header)))
                if isinstance(msg, Ping):  # how it gets into tables: an honest-looking PONG
                    answer = Pong(msg.rid, you=liar.node.current_record() if msg.want else None)
                else:  # no record for the fake ids it answers for: it has none to show
                    fake = tuple(WireContact(f, *a) for f, a in zip(fakes, addresses, strict=True))
                    answer = Nodes(msg.rid, fake)
                    lies.append(msg)
                writer.write(encode(answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(lie, liar.ip, liar.port, reuse_address=True)
    try:
        honest = mesh.members[:6]
        for m in honest:  # the liar answers pings correctly, so it gets into the tables
            assert await m.node._ping(liar.node_id, (liar.ip, liar.port))
            assert liar.node_id in m.node.table
        rng = random.Random(3)
        for _ in range(6):
            src = rng.choice(honest)
            target = rng.randbytes(20)
            found = [f.peer_id for f in await src.node.lookup(target)]
            truth = dht_sim.brute_closest(mesh, target, 20, src.node_id)
            assert set(truth) - {liar.node_id} <= set(found)
            assert not set(fakes) & set(found)
        for m in honest:
            assert not any(f in m.node.table for f in fakes)
            assert not any(f in m.node.identities for f in fakes)
        assert lies  # the liar was asked, and lied
        assert sum(m.node.stats.refused.get("unverified_responder", 0) for m in honest) > 0
    finally:
        server.close()


async def test_a_responder_replaying_someone_elses_record_is_not_believed(mesh):
    """A node at an address that is not in the record it presents is not that node."""
    impostor_ip = f"127.{_BASE}.77.1"
    victim = mesh.members[2]

    async def replay(reader, writer):
        header = await reader.readexactly(4)
        msg = decode(await reader.readexactly(frame_length(header)))
        writer.write(encode(Pong(msg.rid, you=victim.node.current_record())))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(replay, impostor_ip, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        node = mesh.members[0].node
        with pytest.raises(Exception, match="did not prove"):
            await node._ask(victim.node_id, (impostor_ip, port), lambda rid, me, want: Ping(rid, want=True))
        assert node.table.get(victim.node_id).address == (victim.ip, victim.port)
        assert node.stats.refused.get("unverified_responder", 0) >= 1
    finally:
        server.close()


# ---------------------------------------------------------------------------- bad frames


async def test_an_oversized_frame_is_refused_before_reading_and_the_connection_closed(mesh):
    target = mesh.members[1]
    reader, writer = await raw_connection(target, f"127.{_BASE}.10.1")
    writer.write(struct.pack("!I", 64 * 1024 + 1) + b"\x80" * 100)
    answer = await read_answer(reader)
    assert isinstance(answer, Error) and answer.code == "too_large"
    assert await closed_by_peer(reader)
    assert target.node.stats.refused.get("too_large") == 1


async def test_a_malformed_frame_gets_an_error_and_the_connection_goes_on(mesh):
    target = mesh.members[1]
    reader, writer = await raw_connection(target, f"127.{_BASE}.10.2")
    bodies = (b"\xc1", msgpack.packb({"v": 1, "t": "ping", "rid": 1, "evil": 1}),
              msgpack.packb({"v": 9, "t": "ping", "rid": 1}), msgpack.packb({"v": 1, "t": "pong", "rid": 1}))
    for body in bodies:
        writer.write(struct.pack("!I", len(body)) + body)
        answer = await read_answer(reader)
        assert isinstance(answer, Error)
    writer.write(encode(Ping(5)))
    assert await read_answer(reader) == Pong(5)
    refused = target.node.stats.refused
    assert refused.get("malformed") == 2 and refused.get("version") == 1 and refused.get("not_a_request") == 1
    writer.close()


# ---------------------------------------------------------------------------- slow-loris, floods


async def test_slow_loris_connections_are_closed_and_honest_clients_still_served(mesh):
    target = mesh.members[1]
    target.node.config = STRICT
    silent = [await raw_connection(target, f"127.{_BASE}.11.{n + 1}") for n in range(3)]
    trickle_r, trickle_w = await raw_connection(target, f"127.{_BASE}.11.9")
    trickle_w.write(b"\x00\x00")  # half a header, then nothing
    # an honest node is answered meanwhile
    honest = mesh.members[0].node
    assert (await honest.find_record(target.node.peer_id)).peer_id == target.node.peer_id
    for reader, _ in silent:
        assert await closed_by_peer(reader)
    assert await closed_by_peer(trickle_r)
    assert target.node.stats.refused.get("slow", 0) >= 4


async def test_a_frame_sent_byte_by_byte_too_slowly_is_cut(mesh):
    target = mesh.members[1]
    target.node.config = STRICT
    reader, writer = await raw_connection(target, f"127.{_BASE}.11.20")
    frame = encode(Ping(1))
    closed = False
    for b in frame:
        try:
            writer.write(bytes([b]))
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(STRICT.frame_s / 3)
    closed = closed or await closed_by_peer(reader)
    assert closed
    assert target.node.stats.refused.get("slow", 0) >= 1


async def test_connections_per_source_are_capped(mesh):
    target = mesh.members[1]
    target.node.config = STRICT
    src = f"127.{_BASE}.12.1"
    conns = [await raw_connection(target, src) for _ in range(STRICT.max_connections_per_source + 3)]
    closed = 0
    for reader, writer in conns:
        writer.write(encode(Ping(1)))
        try:
            answer = await read_answer(reader)
            assert isinstance(answer, Pong)
        except (asyncio.IncompleteReadError, ConnectionError):
            closed += 1
    assert closed == 3
    assert target.node.stats.refused.get("connections") == 3
    # another source is not affected
    reader, writer = await raw_connection(target, f"127.{_BASE}.12.2")
    writer.write(encode(Ping(2)))
    assert await read_answer(reader) == Pong(2)


async def test_a_request_flood_from_one_source_is_rate_limited(mesh):
    target = mesh.members[1]
    target.node.config = STRICT
    target.node.budgets = SourceBudgets(STRICT.request_rate, STRICT.request_burst)
    reader, writer = await raw_connection(target, f"127.{_BASE}.13.1")
    answers = []
    for rid in range(1, 101):
        writer.write(encode(Ping(rid)))
        answers.append(await read_answer(reader))
    limited = [a for a in answers if isinstance(a, Error) and a.code == "rate_limited"]
    assert 40 <= 100 - len(limited) <= 45  # the burst (40), plus what refilled meanwhile
    assert target.node.stats.refused.get("rate_limited") == len(limited)
    reader2, writer2 = await raw_connection(target, f"127.{_BASE}.13.2")
    writer2.write(encode(Ping(7)))
    assert await read_answer(reader2) == Pong(7)


async def test_a_responder_that_never_answers_fails_the_request_in_time(mesh):
    async def mute(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(3600)

    ip = f"127.{_BASE}.14.1"
    server = await asyncio.start_server(mute, ip, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        node = mesh.members[0].node
        with pytest.raises(Exception, match="TimeoutError"):
            await node._request((ip, port), lambda rid, me: Ping(rid))
        # that connection is not reused (the responder may be gone, or our own address with it)
        assert (ip, port) not in node.pool._pool
    finally:
        server.close()


async def test_serve_accepts_bytes_already_read_by_a_dispatcher(mesh):
    """The control port reads the first five bytes to choose between the control channel and
    the DHT; serve() takes them along."""
    target = mesh.members[1]
    frame = encode(Ping(3, want=True))
    server = await asyncio.start_server(
        lambda r, w: _dispatch(r, w, target.node), f"127.{_BASE}.15.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(f"127.{_BASE}.15.1", port)
        writer.write(frame)
        answer = await read_answer(reader)
        assert isinstance(answer, Pong) and answer.you == target.node.current_record()
    finally:
        server.close()


async def _dispatch(reader, writer, node):
    from nodeagent.discovery.messages import is_dht_frame_start

    first = await reader.readexactly(5)
    assert is_dht_frame_start(first)
    await node.serve(reader, writer, first)


async def test_bootstrap_from_unreachable_seeds_returns_zero(mesh):
    lone = await dht_sim.add_member(mesh, 99, CONFIG, _BASE)
    assert await lone.node.bootstrap([Seed(f"127.{_BASE}.200.1", 9, None)]) == 0
    assert await lone.node.bootstrap([Seed(mesh.members[0].ip, mesh.members[0].port, None)]) > 0


async def test_records_expire_by_the_nodes_clock(mesh):
    """The clock is a constructor argument: a node that is ahead sees expired what is."""
    late, target = mesh.members[3].node, mesh.members[4].node
    target.config = replace(CONFIG, record_lifetime_s=60)
    assert await target.publish() >= 2
    assert (await late.find_record(target.peer_id)).expires <= time.time() + 60
    late.clock = lambda: time.time() + 120  # past the record's expiry, not the certificate's
    assert await late.find_record(target.peer_id) is None
    assert late.stats.refused.get("bad_value", 0) >= 1  # served, but expired: refused
    late.store.expire(late.clock())
    assert target.node_id not in late.store and addr_key(target.overlay_ip) not in late.store
    assert len(late.store) > 0  # the 24-hour records of the others are still there


async def test_upkeep_republishes_and_refreshes_on_its_own(mesh):
    node = mesh.members[2].node
    node.config = replace(CONFIG, maintenance_s=0.05, republish_s=0.2, refresh_s=0.2)
    first = node.own_sequence
    before = node.stats.lookups
    task = asyncio.create_task(node.run())
    try:
        for _ in range(200):  # wait (bounded) until it has republished; no timing is asserted
            if node.own_sequence != first and node.stats.lookups > before + 2:
                break
            await asyncio.sleep(0.05)
        assert node.own_sequence > first
        assert node.stats.lookups > before + 2  # publish and bucket refresh ran lookups
        rec = await mesh.members[0].node.find_record(node.peer_id)
        assert rec.sequence >= node.own_sequence - 1 and rec.sequence > first
    finally:
        task.cancel()
