"""The DHT node: the asyncio edge around the pure modules of this package.

One object per agent. It takes everything it depends on as constructor arguments (the signing
function of the node's ML-DSA-87 key, its certificate, the CA public key, the revoked set, the
wall clock, its endpoint candidates) and keeps no global state.

Server side, `serve(reader, writer, first)` answers one connected stream; the agent mounts it on
its control port, and `listen()` opens a port of its own for simulations and tests. The open
port's limits (connections, deadlines, frame caps, request budgets) are server.py's; each request
they admit is answered here (`answer`), from our table, our store and our own record.

Client side (transport.ClientPool): one TCP connection per remote address, reused for many
requests (request ids), at most `max_pooled` kept; every request runs under `asyncio.timeout`.

Contacts (docs/dht.md): an answer counts only if the responder proved to be the enrolled node we
expected at that address — we hold (or it sent, when we asked with `want`) its valid node record
listing that address. Only then does it enter the routing table. A requester that sends its own
record (`me`) is added after we PING it back at an address from that record.

Upkeep (`run()`): expire records, republish our record every `republish_s` (30 min) and the CA's
revocation list we hold, refresh buckets no lookup touched for `refresh_s`, fetch the revocation
list, and close idle client connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..protocol.cert import ca_id, parse_certificate
from .budget import SourceBudgets
from .config import DhtConfig, DhtStats
from .identities import Identities
from .ids import addr_key, random_id_in_bucket, revocations_key, to_id
from .lookup import Found, Lookup
from .messages import (
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    Request,
    Response,
    Store,
    Stored,
    Value,
    WireContact,
)
from .records import (
    Candidate,
    MalformedRecord,
    NodeRecord,
    RecordError,
    RecordVerifier,
    RevocationList,
    Signer,
    VerifiedDigests,
    build_node_record,
    check_endpoint,
    next_sequence,
)
from .revocations import RevokedSet
from .server import DhtServer
from .store import Put, RecordStore
from .table import Insert, RoutingTable
from .transport import ClientPool, Connection, RequestFailed

__all__ = ["DhtConfig", "DhtNode", "DhtStats", "Seed"]  # DhtConfig, DhtStats: config.py's

log = logging.getLogger(__name__)

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Seed:
    """A contact to bootstrap from (a public hub from the netmap): address, peer id if known."""

    ip: str
    port: int
    peer_id: str | None = None


@functools.lru_cache(maxsize=4096)
def _dialable(ip: str, allow_loopback: bool) -> bool:
    try:
        check_endpoint(ip, 1, 1, allow_loopback=allow_loopback)
    except RecordError:
        return False
    return True


class DhtNode:
    def __init__(
        self,
        *,
        sign: Signer,
        certificate: bytes,
        ca_public_key: bytes,
        candidates: Sequence[Candidate],
        public: bool = False,
        revoked: RevokedSet | None = None,
        signature_cache: VerifiedDigests | None = None,
        config: DhtConfig | None = None,
        clock: Callable[[], float] = time.time,
        bind_ip: str | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
        on_record: Callable[[NodeRecord], None] | None = None,
        on_revoked: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.config = config or DhtConfig()
        self.sign = sign
        self.certificate = bytes(certificate)
        cert = parse_certificate(self.certificate)
        self.peer_id = cert.peer_id
        self.node_id = bytes.fromhex(cert.peer_id)
        self.overlay_ip = cert.overlay_ip
        self.ca_public_key = bytes(ca_public_key)
        self.ca_id = ca_id(self.ca_public_key)
        self.candidates = tuple(candidates)
        self.public = public
        self.revoked = revoked if revoked is not None else RevokedSet()
        self.verifier = RecordVerifier(
            self.ca_public_key, self.revoked, allow_loopback=self.config.allow_loopback, cache=signature_cache
        )
        self.clock = clock
        self.bind_ip = bind_ip
        self.entropy = entropy
        self.on_record = on_record
        self.on_revoked = on_revoked
        c = self.config
        self.table = RoutingTable(self.node_id, k=c.k, subnet_cap=c.subnet_cap)
        self.store = RecordStore(self.node_id, self.verifier.verify)
        self.identities = Identities()
        self.budgets = SourceBudgets(c.request_rate, c.request_burst)
        self.stats = DhtStats()
        self.server = DhtServer(self)  # the open port: reads config, stats, budgets here; calls answer()
        self.own_record: bytes | None = None
        self.own_sequence: int | None = None
        self._own_expires = 0.0
        self.last_publish: float | None = None
        self.last_stored: tuple[int, ...] = ()  # the last publish: stores per key of our record
        self.pool = ClientPool(
            request_s=c.request_s, frame_s=c.frame_s, max_pooled=c.max_pooled, bind_ip=bind_ip,
            first_rid=int.from_bytes(entropy(4), "big"),
        )
        self._advertised: OrderedDict[Address, tuple[int | None, float]] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self._checking: set[bytes] = set()
        self._listener: asyncio.AbstractServer | None = None  # the listener of listen(), if any
        self._closed = False

    # ================================================================== public API

    def status(self) -> dict:
        """The `dht` object of `status --json`."""
        return {
            "contacts": len(self.table),
            "records": len(self.store),
            "last_publish_s": (
                None if self.last_publish is None else round(self.clock() - self.last_publish, 1)
            ),
            "lookups": self.stats.lookups,
            "failures": self.stats.failures,
        }

    async def listen(self, host: str, port: int) -> int:
        """Serve the DHT on a port of its own (simulations, tests); returns the bound port."""
        self._listener = await asyncio.start_server(self.serve, host, port, reuse_address=True)
        return self._listener.sockets[0].getsockname()[1]

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b""
    ) -> None:
        """Answer one connected stream until it ends, under the open port's limits (server.py).
        `first` = bytes already read from it."""
        await self.server.serve(reader, writer, first)

    async def close(self) -> None:
        """Stop serving and asking: connections both ways, background tasks, the listener."""
        self._closed = True
        self.server.closed = True  # no further frame is answered
        await self.pool.close()
        serving = self.server.close_connections()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.server.detached(serving)  # let each transport detach before the listener is closed
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 1.0)

    def set_certificate(self, certificate: bytes) -> None:
        """Our certificate was renewed (same key, peer id and overlay address): the records we
        sign from now on carry it; the caller then awaits publish()."""
        cert = parse_certificate(certificate)
        if cert.peer_id != self.peer_id or cert.overlay_ip != self.overlay_ip:
            raise ValueError("a renewed certificate names the same peer id and overlay address")
        self.certificate = bytes(certificate)
        self.own_record = None

    def set_candidates(self, candidates: Sequence[Candidate]) -> None:
        """Our endpoints changed: the caller then awaits publish()."""
        self.candidates = tuple(candidates)

    def add_revocations(self, peer_ids: Iterable[str]) -> set[str]:
        """Revocations from elsewhere (the server's netmap): applied at once."""
        new = self.revoked.add(peer_ids)
        self._revoked_now(new)
        return new

    def learn_revocations(self, raw: bytes) -> bool:
        """A CA revocation list from elsewhere (the server's netmap): validated (RecordError if it
        does not pass), applied at once, and served from here on. True if it is newer than the list
        we held; spread it with `spread_revocations()` (publish() also stores it again)."""
        rec = self.verifier.verify(raw, self.clock())
        if not isinstance(rec, RevocationList):
            raise MalformedRecord("not a revocation list")
        held = self.revoked.latest
        self._learned(rec)
        return held is None or rec.sequence > held.sequence

    async def spread_revocations(self) -> int:
        """Store the newest CA revocation list we hold at the nodes nearest its key."""
        latest = self.revoked.latest
        if latest is None or self.clock() >= latest.expires:
            return 0
        return await self._store_at_nearest(latest.keys[0], latest.raw)

    async def bootstrap(self, seeds: Iterable[Seed]) -> int:
        """Join: reach the seeds, look ourselves up, refresh the buckets beyond our nearest
        neighbour, publish our record, fetch the revocation list. Returns the contacts held."""
        await asyncio.gather(*(self._ping_seed(s) for s in seeds), return_exceptions=True)
        if len(self.table) == 0:
            log.info("dht: no seed answered")
            return 0
        await self.lookup(self.node_id)
        now = asyncio.get_running_loop().time()
        for index in self.table.stale_buckets(now, self.config.refresh_s):
            await self.lookup(random_id_in_bucket(self.node_id, index, self.entropy(20)))
        await self.publish()
        await self.fetch_revocations()
        return len(self.table)

    async def lookup(self, target: bytes) -> list[Found]:
        """FIND_NODE: the k nearest enrolled nodes to `target` that answered."""
        lk = await self.run_lookup(to_id(target), find_value=False)
        return lk.result()

    async def find_record(self, peer_id: str | bytes) -> NodeRecord | None:
        """FIND_VALUE on a peer id: that node's newest record we could find, validated."""
        key = to_id(peer_id)
        rec = await self._find_value(key)
        return rec if isinstance(rec, NodeRecord) and rec.node_id == key else None

    async def find_by_overlay_ip(self, ip: str) -> NodeRecord | None:
        """FIND_VALUE on the overlay-IP key: the node that holds `ip`, validated."""
        addr = ipaddress.ip_address(ip)
        rec = await self._find_value(addr_key(addr))
        return rec if isinstance(rec, NodeRecord) and rec.overlay_ip == addr else None

    def current_record(self) -> bytes | None:
        """Our own signed record, signing a new one if we have none or it is about to expire;
        None if we cannot make a valid one (our certificate expired): we then only ask."""
        now = self.clock()
        if self.own_record is None or now >= self._own_expires - self.config.republish_s:
            try:
                self._sign_record(now)
            except RecordError as exc:
                log.warning("dht: cannot sign our own record: %s", exc)
                return None
        return self.own_record

    def _sign_record(self, now: float) -> NodeRecord:
        seq = next_sequence(self.own_sequence, now)
        raw = build_node_record(
            self.sign,
            certificate=self.certificate,
            sequence=seq,
            issued=int(now),
            expires=int(now) + self.config.record_lifetime_s,
            candidates=self.candidates,
            public=self.public,
            allow_loopback=self.config.allow_loopback,
        )
        rec = self.verifier.node_record(raw, now)  # our own record must pass what others check
        self.own_record, self.own_sequence, self._own_expires = raw, seq, rec.expires
        self.identities.learn(rec)
        return rec

    async def publish(self) -> int:
        """Sign a new record (next sequence) and store it at the k nearest nodes of both its keys;
        also store the newest CA revocation list we hold. Returns the successful stores. With no
        endpoint candidate (nothing a peer could dial) there is no record to publish: we only ask."""
        now = self.clock()
        ok = 0
        stored = []
        if self.candidates:
            rec = self._sign_record(now)
            for key in rec.keys:
                stored.append(await self._store_at_nearest(key, rec.raw))
            ok = sum(stored)
        else:
            log.info("dht: no endpoint to publish; asking only")
        self.last_stored = tuple(stored)
        if self.revoked.latest is not None and now < self.revoked.latest.expires:
            ok += await self._store_at_nearest(self.revoked.latest.keys[0], self.revoked.latest.raw)
        self.last_publish = now
        return ok

    async def fetch_revocations(self) -> RevocationList | None:
        rec = await self._find_value(revocations_key(self.ca_id), missing_is_failure=False)
        return rec if isinstance(rec, RevocationList) else None

    async def run(self) -> None:
        """Upkeep until cancelled."""
        loop = asyncio.get_running_loop()
        last_revocations = loop.time()
        while True:
            await asyncio.sleep(self.config.maintenance_s)
            try:
                now = self.clock()
                self.store.expire(now)
                self.identities.expire(now)
                self.pool.close_idle(self.config.client_idle_s)
                if self.last_publish is None or now - self.last_publish >= self.config.republish_s:
                    await self.publish()
                if loop.time() - last_revocations >= self.config.republish_s:
                    last_revocations = loop.time()
                    await self.fetch_revocations()
                for index in self.table.stale_buckets(loop.time(), self.config.refresh_s):
                    await self.lookup(random_id_in_bucket(self.node_id, index, self.entropy(20)))
            except Exception:  # upkeep must outlive any one failure
                log.exception("dht upkeep failed; trying again in %.0f s", self.config.maintenance_s)

    # ================================================================== answering

    def answer(self, msg: Request) -> Response:
        """The answer to a request the server admitted (server.py: within its source's budget). A
        requester that sent its own record (`me`) is learned first."""
        me = getattr(msg, "me", None)
        requester = self._learn_requester(me) if me is not None else None
        return self._handle(msg, requester)

    def _handle(self, msg: Request, requester: bytes | None) -> Response:
        want = getattr(msg, "want", False)
        you = self.current_record() if want else None
        if isinstance(msg, Ping):
            return Pong(msg.rid, you=you)
        if isinstance(msg, Store):
            return self._handle_store(msg)
        nodes = self._wire_nodes(msg.key, exclude=requester)
        if isinstance(msg, FindValue):
            raw = self._value_for(msg.key)
            if raw is not None:
                return Value(msg.rid, raw, nodes, you=you)
        return Nodes(msg.rid, nodes, you=you)

    def _handle_store(self, msg: Store) -> Response:
        now = self.clock()
        if msg.key in (self.node_id, addr_key(self.overlay_ip)):
            return Stored(msg.rid, Put.STALE.value, "own_key")  # we answer for our own keys
        result = self.store.put(msg.key, msg.rec, now)
        if not result.ok:
            self.stats.refuse("store_" + result.reason)
        elif result.status is Put.STORED:
            self.stats.stored += 1
            self._learned(result.record)
        return Stored(msg.rid, result.status.value, result.reason)

    def _value_for(self, key: bytes) -> bytes | None:
        if self.own_record is not None and key in (self.node_id, addr_key(self.overlay_ip)):
            return self.own_record
        latest = self.revoked.latest  # the newest list we applied, from the DHT or the server
        if latest is not None and key == latest.keys[0] and self.clock() < latest.expires:
            return latest.raw
        rec = self.store.get(key, self.clock())
        return None if rec is None else rec.raw

    def _wire_nodes(self, key: bytes, exclude: bytes | None) -> tuple[WireContact, ...]:
        near = self.table.closest(key, self.config.k, exclude)
        return tuple(WireContact(c.peer_id, c.ip, c.port) for c in near)

    def _learn_requester(self, raw: bytes) -> bytes | None:
        """A requester sent its own record: validate it; if it is new to our table, PING it back
        at an address from that record before it may enter."""
        try:
            rec = self.verifier.node_record(raw, self.clock())
        except RecordError as exc:
            self.stats.refuse("requester_" + exc.reason)
            return None
        self._learned(rec)
        if self.table.has_room(rec.node_id):  # a full bucket keeps its old contacts anyway
            self._check_reachable(rec.node_id)
        return rec.node_id

    # ================================================================== client

    async def _request(self, address: Address, make: Callable[[int, bytes | None], Request]) -> Response:
        """One request, built by `make(rid, me)`; RequestFailed if it gets no answer."""
        return await self.pool.request(
            address, lambda rid, conn: make(rid, self._advertisement(address, conn))
        )

    def _advertisement(self, address: Address, conn: Connection) -> bytes | None:
        """Our record for the first request of a connection, unless this address already got
        this very record within `advertise_s` (a busy node reconnects often)."""
        if not self.config.advertise or conn.me_sent:
            return None
        conn.me_sent = True
        record = self.current_record()
        loop_now = asyncio.get_running_loop().time()
        sent = self._advertised.get(address)
        if sent is not None and sent[0] == self.own_sequence and loop_now - sent[1] < self.config.advertise_s:
            return None
        self._advertised[address] = (self.own_sequence, loop_now)
        self._advertised.move_to_end(address)
        if len(self._advertised) > 4096:
            self._advertised.popitem(last=False)
        return record

    def _verified(self, expected: bytes | None, address: Address, answer: Response) -> bytes | None:
        """The peer id of the responder if it proved to be an enrolled node at `address` (and the
        one we expected); else None."""
        now = self.clock()
        you = getattr(answer, "you", None)
        if you is not None:
            try:
                rec = self.verifier.node_record(you, now)
            except RecordError:
                return None
            if expected is not None and rec.node_id != expected:
                return None
            self._learned(rec)
            expected = rec.node_id
        if expected is None or not self.identities.vouches(expected, address, now):
            return None
        return expected

    async def _ask(self, peer_id: bytes | None, address: Address, make) -> tuple[bytes, Response]:
        """A request to a node we expect at `address`; the answer only counts if verified."""
        want = peer_id is None or not self.identities.vouches(peer_id, address, self.clock())
        try:
            answer = await self._request(address, lambda rid, me: make(rid, me, want))
        except RequestFailed:
            if peer_id is not None:
                self._contact_failed(peer_id, address)
            raise
        who = self._verified(peer_id, address, answer)
        if who is None:
            self.stats.refuse("unverified_responder")
            if peer_id is not None:
                self._contact_failed(peer_id, address)
            raise RequestFailed(f"{address} did not prove to be the expected enrolled node")
        self._contact_answered(who, address)
        return who, answer

    async def _ping_seed(self, seed: Seed) -> None:
        expected = to_id(seed.peer_id) if seed.peer_id else None
        await self._ask(expected, (seed.ip, seed.port), lambda rid, me, want: Ping(rid, me=me, want=want))

    async def _ping(self, peer_id: bytes, address: Address) -> bool:
        try:
            await self._ask(peer_id, address, lambda rid, me, want: Ping(rid, me=me, want=want))
        except RequestFailed:
            return False
        return True

    def _contact_answered(self, peer_id: bytes, address: Address) -> None:
        loop_now = asyncio.get_running_loop().time()
        out, oldest = self.table.seen(peer_id, address[0], address[1], loop_now)
        if out is Insert.PING_OLDEST and oldest is not None:
            self._spawn(self._evict_check(oldest.peer_id, oldest.address))

    def _contact_failed(self, peer_id: bytes, address: Address) -> None:
        held = self.table.get(peer_id)
        if held is not None and held.address == tuple(address):
            self.table.failed(peer_id, asyncio.get_running_loop().time())

    async def _evict_check(self, peer_id: bytes, address: Address) -> None:
        alive = await self._ping(peer_id, address)
        self.table.ping_result(peer_id, alive, asyncio.get_running_loop().time())

    def _check_reachable(self, peer_id: bytes) -> None:
        if peer_id in self._checking or len(self._checking) >= self.config.max_pending_checks:
            return
        self._checking.add(peer_id)
        self._spawn(self._reach(peer_id))

    async def _reach(self, peer_id: bytes) -> None:
        try:
            ident = self.identities.get(peer_id, self.clock())
            for address in ident.addresses[:3] if ident else ():
                if await self._ping(peer_id, address):
                    return
        finally:
            self._checking.discard(peer_id)

    def _settled(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure of a request nobody waits for is no error

    def _spawn(self, coro) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ================================================================== lookups

    async def run_lookup(self, target: bytes, find_value: bool = False) -> Lookup:
        """A whole lookup; returns the finished state machine (results, hops, values)."""
        c = self.config
        loop = asyncio.get_running_loop()
        seeds = [(x.peer_id, x.address) for x in self.table.closest(target, c.k)]
        lk = Lookup(
            target, seeds, loop.time(), own_id=self.node_id, k=c.k, alpha=c.alpha,
            query_timeout=c.request_s * 2, find_value=find_value, value_quorum=c.value_quorum,
        )
        self.table.lookup_started(target, loop.time())
        self.stats.lookups += 1
        running: dict[asyncio.Task, bytes] = {}
        try:
            while not lk.done:
                for q in lk.next_queries(loop.time()):
                    task = loop.create_task(self._query(q.peer_id, q.address, target, find_value))
                    running[task] = q.peer_id
                if not running:
                    break
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    peer_id = running.pop(task)
                    try:
                        contacts, value = task.result()
                    except RequestFailed:
                        lk.on_failure(peer_id, loop.time())
                        continue
                    except Exception:  # a bug must cost one answer, not the lookup
                        log.exception("dht: query to %s failed", peer_id.hex()[:8])
                        lk.on_failure(peer_id, loop.time())
                        continue
                    if value is not None and target not in value.keys:
                        lk.on_response(peer_id, contacts, loop.time())
                        lk.distrust(peer_id)  # a valid record, but not for the key we asked
                    elif value is not None:
                        lk.on_response(peer_id, contacts, loop.time(), value=value, rank=value.rank)
                    else:
                        lk.on_response(peer_id, contacts, loop.time())
        finally:
            # requests still out when the lookup is decided are left to finish (each is bounded
            # by request_s, and an answer still updates the routing table); cancelling them would
            # leave a cycle of exception, traceback and frame per task for the collector
            for task in running:
                self._tasks.add(task)
                task.add_done_callback(self._settled)
        if not find_value:
            found = lk.result()
            if not found:
                self.stats.failures += 1
            self.stats.hops = [*self.stats.hops[-999:], lk.hops]
        return lk

    async def _query(self, peer_id: bytes, address: Address, target: bytes, find_value: bool):
        """One lookup request; returns (contacts, validated value or None)."""
        if find_value:
            def make(rid, me, want):
                return FindValue(rid, target, me=me, want=want)
        else:
            def make(rid, me, want):
                return FindNode(rid, target, me=me, want=want)
        _, answer = await self._ask(peer_id, address, make)
        if not isinstance(answer, Nodes | Value):
            raise RequestFailed(f"{address} answered {type(answer).__name__} to a lookup")
        contacts = [(n.peer_id, (n.ip, n.port)) for n in answer.nodes if self._usable(n)]
        value = None
        if isinstance(answer, Value):
            try:
                value = self.verifier.verify(answer.rec, self.clock())
            except RecordError:
                self.stats.refuse("bad_value")
                raise RequestFailed(f"{address} served an invalid record") from None
        return contacts, value

    def _usable(self, n: WireContact) -> bool:
        """A contact named in an answer is worth asking: a sane address, not revoked."""
        return _dialable(n.ip, self.config.allow_loopback) and n.peer_id.hex() not in self.revoked

    async def _find_value(
        self, key: bytes, missing_is_failure: bool = True
    ) -> NodeRecord | RevocationList | None:
        lk = await self.run_lookup(key, find_value=True)
        best = lk.best_value
        if best is None:
            if missing_is_failure or not lk.result():
                self.stats.failures += 1
            return None
        rec = best[1]
        assert isinstance(rec, NodeRecord | RevocationList)  # run_lookup validated every value
        self.stats.hops = [*self.stats.hops[-999:], best[3]]
        self._learned(rec)
        return rec

    async def _store_at_nearest(self, key: bytes, raw: bytes) -> int:
        found = await self.lookup(key)

        async def one(f: Found) -> bool:
            try:
                _, answer = await self._ask(
                    f.peer_id, f.address, lambda rid, me, want: Store(rid, key, raw, me=me)
                )
            except RequestFailed:
                return False
            return isinstance(answer, Stored) and answer.status in (Put.STORED.value, Put.UNCHANGED.value)

        results = await asyncio.gather(*(one(f) for f in found))
        return sum(results)

    # ================================================================== what we learn

    def _learned(self, rec: NodeRecord | RevocationList | None) -> None:
        if isinstance(rec, NodeRecord):
            if self.identities.learn(rec):
                self._refresh_held(rec)
                if self.on_record is not None and rec.node_id != self.node_id:
                    self.on_record(rec)
        elif isinstance(rec, RevocationList):
            new = self.revoked.apply_list(rec)
            self._revoked_now(new)

    def _refresh_held(self, rec: NodeRecord) -> None:
        """A newer record of a node whose record we hold for others (it came with a request, an
        answer or a lookup): the stored copies follow, so a STORE that did not reach us (its
        publisher had just moved, say) does not leave us serving the old one."""
        now = self.clock()
        for key in rec.keys:
            if key in self.store:
                self.store.put(key, rec.raw, now)  # replaces only a lower-ranked record

    def _revoked_now(self, new: set[str]) -> None:
        if not new:
            return
        for peer_id in new:
            node_id = bytes.fromhex(peer_id)
            self.table.remove(node_id)
            self.identities.forget(node_id)
        self.store.purge_revoked(new)
        log.info("dht: %d node(s) revoked", len(new))
        if self.on_revoked is not None:
            self.on_revoked(new)
