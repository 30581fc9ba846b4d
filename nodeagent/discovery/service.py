"""The DHT in a running enrolled agent: one DhtNode, what feeds it and what it causes. The I/O edge
of peering.py (the rules) and node.py (the DHT itself); docs/dht.md, "In the agent".

Enrolled mode only (serverless mode has no CA to chain records to); startup.py builds it unless
SHADOWMESH_DHT=0, and agent.py `attach_discovery` wires it:

  node        `sign` = the node key's sign method (the key itself stays with the identity), our
              certificate and the CA key from the state directory, our advertised endpoints
              (kind reported) and NAT traversal's UDP candidates (local, reflexive: told by the
              agent, `candidates_changed`) as the record's candidates, the certificate's public
              flag, and a RevokedSet that only grows, loaded from and saved to
              `revocations.json` in the state directory
  port        the control listener hands a connection whose first five bytes start a DHT frame
              to `node.serve`, outside its doorway (control/server.py); the node's own limits
              (connections per source, deadlines, request budgets) apply there
  netmaps     every applied map (`netmap_applied`, told by enrolled.py): its revocations go into
              the revoked set, and the CA's revocation list it carries is applied, served and
              stored in the DHT, so it reaches nodes while the server is down; its public hubs
              (the persisted map's too) are the seeds
  records     `on_record` (a verified record learned or changed) -> peering.decide (with the
              access policy's rules the data path enforces, `policy_rules`) -> a DHT peer
              added or a peer's endpoint changed (enrolled.py `add_dht_peer`, `set_endpoint`),
              the record's candidates becoming the peer's UDP candidates (traversal.py)
  revoked     `on_revoked` (new ids, from a list or a map) -> enrolled.py `drop_revoked`: the
              peers dropped, links closed with REVOKED, keys wiped; our own id: we were revoked
  lookups     with the server away (while it is connected, its netmap decides): a peer with no
              control link for STALE_S (its endpoint stopped answering) -> find_record; a packet
              to an overlay address of the network that no peer holds (the data path's
              no_route) -> find_by_overlay_ip; a HELLO naming a peer id we do not know ->
              find_record. A LookupThrottle bounds each kind.
  upkeep      join (bootstrap) once there are seeds, again while the table is empty; publish on
              join, on every change of our endpoints (checked every ENDPOINT_CHECK_S) and every
              30 minutes; records expire (DhtNode.run)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..config import PeerConfig
from ..enroll import write_private_file
from ..enrolled import usable_endpoint, with_candidates
from ..policy.index import RuleIndex
from ..protocol import netmap as nm
from ..protocol.cert import CertificateError
from ..protocol.counters import DhtCounters
from ..status import dht_status
from .config import DhtConfig
from .node import DhtNode, Seed
from .peering import AddPeer, Held, Ignore, LookupThrottle, SetEndpoint, decide
from .records import (
    KIND_LOCAL,
    KIND_OBSERVED,
    KIND_REFLEXIVE,
    KIND_REPORTED,
    MAX_CANDIDATES,
    Candidate,
    NodeRecord,
    RecordError,
    verify_revocation_list,
)
from .revocations import RevokedSet

__all__ = [
    "ENDPOINT_CHECK_S", "REVOCATIONS_FILE", "STALE_S", "Discovery", "load_revoked", "peer_candidates",
    "record_candidates",
]

log = logging.getLogger(__name__)

REVOCATIONS_FILE = "revocations.json"  # {"revoked": [peer id, ...], "list": base64 of the newest CA list}
ENDPOINT_CHECK_S = 5.0  # how often our advertised endpoints are computed again
WATCH_S = 2.0  # how often peers without a control link are looked at
STALE_S = 8.0  # a peer without a control link this long: its endpoint stopped answering
JOIN_FIRST_S, JOIN_MAX_S = 2.0, 30.0  # retrying the join while no seed answers
PEER_LOOKUP_S = 30.0  # at most one lookup per peer id (or overlay address) this often
LOOKUP_RATE, LOOKUP_BURST = 1.0, 10  # lookups the agent starts on its own, per second


_KINDS = {"reported": KIND_REPORTED, "observed": KIND_OBSERVED, "reflexive": KIND_REFLEXIVE,
          "local": KIND_LOCAL}
_ORDER = (KIND_REPORTED, KIND_OBSERVED, KIND_REFLEXIVE, KIND_LOCAL)  # what the cap keeps first


def record_candidates(endpoints: tuple[nm.Endpoint, ...]) -> tuple[Candidate, ...]:
    """Our endpoints as a record's candidates: each source as its kind byte; the advertised ones
    first, then the reflexive ones (what a NAT shows the hubs), then interface addresses, at most
    MAX_CANDIDATES."""
    cands = [Candidate(e, _KINDS.get(e.source, KIND_REPORTED)) for e in endpoints]
    cands.sort(key=lambda c: _ORDER.index(c.kind))  # stable: each kind keeps its order
    return tuple(cands[:MAX_CANDIDATES])


def peer_candidates(record: NodeRecord) -> tuple[tuple[str, str, int], ...]:
    """A record's candidates as a peer's UDP candidates (PeerConfig.candidates, traversal.py)."""
    return tuple((e.source, e.ip, e.udp_port) for e in record.endpoints)


def load_revoked(state_dir: Path, ca_public_key: bytes, now: float) -> RevokedSet:
    """The revoked set kept in the state directory. What does not parse is named in the log and
    skipped (the netmap and the DHT give revocations again); a list that no longer verifies (it
    expired) is dropped, its ids stay."""
    path = Path(state_dir) / REVOCATIONS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return RevokedSet()
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); starting with the revocations of the netmap", path, exc)
        return RevokedSet()
    if not isinstance(data, dict) or not isinstance(data.get("revoked"), list):
        log.warning("%s: not a revocation document; starting with the revocations of the netmap", path)
        return RevokedSet()
    ids = []
    for item in data["revoked"]:
        if isinstance(item, str) and len(item) == 40 and all(c in "0123456789abcdef" for c in item):
            ids.append(item)
        else:
            log.warning("%s: %r is not a peer id; skipped", path, item)
    revoked = RevokedSet(ids)
    raw = data.get("list")
    if isinstance(raw, str):
        try:
            kept = base64.b64decode(raw, validate=True)
            revoked.apply_list(verify_revocation_list(kept, ca_public_key, now))
        except (RecordError, binascii.Error, ValueError) as exc:
            log.info("%s: the CA list kept there is not used: %s", path, exc)
    return revoked


class Discovery:
    """The agent's DHT (see the module docstring). `run()` in the agent's task group, `close()` when
    it stops."""

    def __init__(self, *, state_dir: Path, sign, certificate: bytes, ca_public_key: bytes,
                 endpoints: Callable[[], tuple[nm.Endpoint, ...]], public: bool, overlay, enrolled,
                 links_up: Callable[[str], bool], policy_rules: Callable[[], RuleIndex | None],
                 allow_loopback: bool, bind_ip: str | None = None,
                 config: DhtConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        """`endpoints()`: our advertised endpoints now (enrolled.advertised_endpoints; it may block
        on a name lookup, so it runs in a worker thread); `overlay`: our overlay interface
        (address and prefix); `enrolled`: the EnrolledMode whose peers and trust it changes;
        `links_up(peer_id)`: whether that peer has a control link; `policy_rules()`: the access
        policy's compiled rules the data path enforces now, None when it filters nothing
        (Agent.policy_rules): a node the netmap does not list is a peer only if they let some
        traffic pass between it and us (peering.policy_allows)."""
        self.state_dir = Path(state_dir)
        self.ca_public_key = bytes(ca_public_key)
        self.endpoints_now = endpoints
        self.overlay = overlay
        self.enrolled = enrolled
        self.links_up = links_up
        self.policy_rules = policy_rules
        self.allow_loopback = allow_loopback
        self.clock = clock
        self.revoked = load_revoked(self.state_dir, self.ca_public_key, clock())
        self.base: tuple[nm.Endpoint, ...] = ()  # what endpoints() gave last
        self.endpoints: tuple[nm.Endpoint, ...] = ()  # what our record carries (base and candidates)
        # told the advertised endpoints when they change (start-up: enrolled.set_base_endpoints)
        self.on_endpoints: Callable[[tuple[nm.Endpoint, ...]], None] | None = None
        self.node = DhtNode(
            sign=sign, certificate=certificate, ca_public_key=ca_public_key, candidates=(), public=public,
            revoked=self.revoked, config=config or DhtConfig(allow_loopback=allow_loopback), clock=clock,
            bind_ip=bind_ip, on_record=self._on_record, on_revoked=self._on_revoked)
        self.seeds: tuple[Seed, ...] = ()
        self._mapped = asyncio.Event()  # a netmap (the persisted one, or the server's) was applied
        self.throttle = LookupThrottle(PEER_LOOKUP_S, LOOKUP_RATE, LOOKUP_BURST)
        self.down_since: dict[str, float] = {}  # peer id -> when (monotonic) its link was first seen down
        self.ignored: dict[str, int] = {}  # peering.Ignore reasons, counted
        self._tasks: set[asyncio.Task] = set()
        self._saved: tuple[int, int | None] | None = None
        self._publish_wanted = False  # our endpoints changed and no node has stored the new record yet
        self._publishing = False
        self._closed = False
        if self.revoked:  # before the persisted netmap is applied: its revoked peers stay out
            enrolled.drop_revoked(set(self.revoked))

    # --- status -----------------------------------------------------------------------------
    def counters(self) -> DhtCounters:
        """What the DHT holds and did (status --json's `dht`, the counter report's)."""
        return DhtCounters(**self.node.status())

    def status(self) -> dict:
        """The `dht` object of `status --json`."""
        return dht_status(self.counters(), peers=len(self.enrolled.dht_peers))

    # --- what the agent tells us ------------------------------------------------------------
    def netmap_applied(self, netmap: nm.NetMap) -> None:
        """A map was applied (enrolled.py): its revocations, the CA list it carries, its hubs."""
        self.node.add_revocations(r.peer_id for r in netmap.revoked)
        raw = netmap.revocation_list
        if raw:
            try:
                if self.node.learn_revocations(raw):
                    self._spawn(self.node.spread_revocations())
            except RecordError as exc:
                log.warning("the netmap's revocation list is not used: %s", exc)
        self._save()
        seeds = []
        for p in netmap.peers:
            if p.is_public and p.peer_id not in self.revoked:
                endpoint = usable_endpoint(p, allow_loopback=self.allow_loopback)
                if endpoint is not None:
                    seeds.append(Seed(endpoint[0], endpoint[1], p.peer_id))
        self.seeds = tuple(seeds)
        self._mapped.set()

    def certificate_renewed(self, certificate: bytes) -> None:
        """The server renewed our certificate (server_link.py): our record carries the new one,
        published with the next round of upkeep."""
        try:
            self.node.set_certificate(certificate)
        except (ValueError, CertificateError) as exc:
            log.error("dht: the renewed certificate is not used: %s", exc)
            return
        self._publish_wanted = self.node.last_publish is not None

    def no_route(self, dst: bytes) -> None:
        """The data path has a packet for `dst` (packed address) and no peer holds it. Called for
        such packets only (never on the normal path); cheap, and bounded by the throttle."""
        try:
            ip = ipaddress.ip_address(dst)
        except ValueError:
            return
        if ip not in self.overlay.network or ip == self.overlay.ip or self._closed or self._server_decides():
            return
        if self.throttle.allow(("ip", ip), time.monotonic()):
            self._spawn(self._lookup_address(str(ip)))

    def unknown_peer(self, peer_id: str) -> None:
        """A HELLO named a peer id we do not know (control/server.py); unauthenticated, so bounded."""
        if len(peer_id) != 40 or peer_id in self.revoked or self._closed or self.enrolled.revoked_self \
                or self._server_decides():
            return
        if self.throttle.allow(("peer", peer_id), time.monotonic()):
            self._spawn(self._lookup_peer(peer_id, failing=False))

    def _server_decides(self) -> bool:
        """The server is connected and its netmap applied: that map is the membership, so looking
        up a node it does not list could change nothing (peering.decide)."""
        return self.enrolled.server_connected() and self.enrolled.applied is not None

    # --- what the DHT tells us --------------------------------------------------------------
    def _on_record(self, record: NodeRecord) -> None:
        self._consider(record, failing=self._failing(record.peer_id))

    def _on_revoked(self, peer_ids: set[str]) -> None:
        self.enrolled.drop_revoked(set(peer_ids))
        for pid in peer_ids:
            self.down_since.pop(pid, None)
        self._save()

    def _consider(self, record: NodeRecord, *, failing: bool) -> None:
        en = self.enrolled
        if en.revoked_self:
            return
        pid = record.peer_id
        peer = en.peers.get(pid)
        held = None if peer is None else Held(peer.config.endpoint, pid in en.dht_peers)
        holder = next((p.config.peer_id for p in en.peers if p.config.overlay_ip == record.overlay_ip), None)
        decision = decide(record, own_peer_id=en.peer_id, netmap=en.applied, rules=self.policy_rules(),
                          own_ip=self.overlay.ip,
                          server_connected=en.server_connected(), held=held, endpoint_failing=failing,
                          address_holder=holder, allow_loopback=self.allow_loopback)
        match decision:
            case AddPeer(endpoint=endpoint):
                cert = record.certificate
                log.info("dht: %s (%s) at %s learned from the DHT: a peer now (the server is %s)",
                         cert.name, pid[:8], endpoint, "connected" if en.server_connected() else "away")
                en.add_dht_peer(PeerConfig(public_key=b"", peer_id=pid, overlay_ip=record.overlay_ip,
                                           name=cert.name, endpoint=endpoint, via=None, allowed_ips=(),
                                           candidates=peer_candidates(record)))
            case SetEndpoint(endpoint=endpoint):
                log.info("dht: %s (%s): endpoint %s -> %s from its record", record.certificate.name, pid[:8],
                         held.endpoint if held else None, endpoint)
                en.set_endpoint(pid, endpoint, peer_candidates(record))
                self.down_since.pop(pid, None)
            case Ignore(reason=reason):
                self.ignored[reason] = self.ignored.get(reason, 0) + 1
                log.debug("dht: record of %s (sequence %d) changes nothing: %s", pid[:8], record.sequence,
                          reason)

    def _failing(self, peer_id: str) -> bool:
        since = self.down_since.get(peer_id)
        return since is not None and time.monotonic() - since >= STALE_S

    # --- lookups ----------------------------------------------------------------------------
    async def _lookup_peer(self, peer_id: str, *, failing: bool) -> None:
        record = await self.node.find_record(peer_id)
        found = "not found" if record is None else f"sequence {record.sequence}, " + ", ".join(
            f"{e.ip}:{e.control_port}" for e in record.endpoints)
        why = "no control link" if failing else "unknown HELLO"
        log.debug("dht: lookup of %s (%s): %s", peer_id[:8], why, found)
        if record is not None:
            self._consider(record, failing=failing)

    async def _lookup_address(self, ip: str) -> None:
        record = await self.node.find_by_overlay_ip(ip)
        log.debug("dht: lookup of overlay address %s: %s", ip,
                  "not found" if record is None else f"{record.certificate.name} ({record.peer_id[:8]})")
        if record is not None:
            self._consider(record, failing=self._failing(record.peer_id))

    def _watch_links(self) -> None:
        """Peers with no control link for STALE_S: look their records up (a newer endpoint?). Not
        while the connected server's netmap decides (peering.decide: a record would change
        nothing; a peer behind a NAT, reached through a hub, never has a link of its own)."""
        now = time.monotonic()
        ask = not self._server_decides()
        current = set()
        for p in self.enrolled.peers:
            pid = p.config.peer_id
            current.add(pid)
            if self.links_up(pid):
                self.down_since.pop(pid, None)
                continue
            since = self.down_since.setdefault(pid, now)
            if ask and now - since >= STALE_S and self.throttle.allow(("peer", pid), now):
                self._spawn(self._lookup_peer(pid, failing=True))
        for pid in set(self.down_since) - current:
            del self.down_since[pid]

    # --- upkeep -----------------------------------------------------------------------------
    async def run(self) -> None:
        self._spawn(self.node.run())
        joining = False
        while True:
            try:
                await self._check_endpoints()
                if not joining:  # our endpoints are known: the join publishes them
                    self._spawn(self._join())
                    joining = True
                if self._publish_wanted and not self._publishing and self.node.last_publish is not None:
                    self._publishing = True
                    self._spawn(self._publish())
                for _ in range(round(ENDPOINT_CHECK_S / WATCH_S)):
                    self._watch_links()
                    await asyncio.sleep(WATCH_S)
            except asyncio.CancelledError:
                raise
            except Exception:  # upkeep must outlive any one failure
                log.exception("dht: upkeep failed")
                await asyncio.sleep(WATCH_S)

    async def _check_endpoints(self) -> None:
        """Our advertised endpoints, computed again (the node may have moved): a change goes to
        `on_endpoints` (the server link reports it), and the record follows (`_set_endpoints`)."""
        base = tuple(await asyncio.to_thread(self.endpoints_now))
        if base != self.base:
            self.base = base
            if self.on_endpoints is not None:
                self.on_endpoints(base)
        self._set_endpoints()

    def candidates_changed(self) -> None:
        """Our UDP candidates changed (NAT traversal: an interface address, what a hub saw of our
        data port; enrolled.candidates): the record carries them."""
        if not self._closed:
            self._set_endpoints()

    def _set_endpoints(self) -> None:
        """Our endpoints (the advertised ones, then our UDP candidates) changed, or are known for the
        first time: a new record, published now if we have published before (else the join
        publishes it), and again every ENDPOINT_CHECK_S until some node stored it (right after a
        move, connections from the old address fail)."""
        endpoints = with_candidates(self.base, self.enrolled.candidates)
        if endpoints == self.endpoints:
            return
        log.info("dht: our endpoints: %s", ", ".join(
            f"{e.ip}:{e.control_port}/{e.udp_port} ({e.source})" for e in endpoints) or "none")
        self.endpoints = endpoints
        self.node.set_candidates(record_candidates(endpoints))
        self._publish_wanted = self.node.last_publish is not None

    async def _publish(self) -> None:
        published = self.node.candidates
        try:
            await self.node.publish()
            stored = self.node.last_stored
            log.info("dht: our new record stored %s time(s) (peer id key, address key)", stored)
            if stored and all(stored) and self.node.candidates == published:
                self._publish_wanted = False
        finally:
            self._publishing = False

    async def _join(self) -> None:
        """Once a netmap is applied: join from its public hubs (bootstrap: ping them, look ourselves
        up, publish, fetch the CA's list), again while the table is empty. A node no hub answered
        for (a hub that started first) is found by the others; it publishes once it has contacts."""
        delay = JOIN_FIRST_S
        await self._mapped.wait()
        while True:
            try:
                if len(self.node.table) == 0:
                    seeds = [s for s in self.seeds if s.peer_id != self.node.peer_id]
                    if seeds and await self.node.bootstrap(seeds):  # (it publishes our record)
                        log.info("dht: joined (%d contacts)", len(self.node.table))
                        self._publish_wanted = False
                        delay = JOIN_FIRST_S
                    else:
                        delay = min(delay * 2, JOIN_MAX_S)
                elif self.node.last_publish is None:
                    await self.node.publish()
                    await self.node.fetch_revocations()
            except asyncio.CancelledError:
                raise
            except Exception:  # joining must outlive any one failure
                log.exception("dht: joining failed; trying again in %.0f s", delay)
            await asyncio.sleep(delay)

    def _spawn(self, coro) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(coro) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed lookup or publish costs that one, not the agent
            log.exception("dht: a background task failed")

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.node.close()

    # --- the revoked set, kept with the state -----------------------------------------------
    def _save(self) -> None:
        latest = self.revoked.latest
        mark = (len(self.revoked), None if latest is None else latest.sequence)
        if mark == self._saved:
            return
        doc = {"revoked": sorted(self.revoked),
               "list": None if latest is None else base64.b64encode(latest.raw).decode("ascii")}
        try:
            write_private_file(self.state_dir / REVOCATIONS_FILE, json.dumps(doc).encode())
        except OSError as exc:
            log.warning("dht: cannot keep the revoked set in %s: %s", self.state_dir / REVOCATIONS_FILE, exc)
            return
        self._saved = mark
