"""NAT traversal at run time (enrolled mode): carries out the pure machines of nodeagent/paths.

Who does what:
  paths/candidates.py  candidates and their validation      paths/natclass.py  our NAT class
  paths/punch.py       one hole-punch per relayed peer      paths/choice.py    its data path
  paths/select.py      applies the data path (`data_path`, `peer.data_hub`)
  tunnel/datapath.py   opens PROBE, PROBE_ACK and CALL frames (disco keys, replay window) and
                       hands them here (`on_disco`); `send_disco` seals and sends ours

Flow:
  1. Our candidates (`ours`): interface addresses (tun.interface_addresses, in a worker thread,
     every LOCAL_REFRESH_S; not the TUN, not the overlay, validated) and what each public hub
     saw of our data port: a PROBE to every hub we reach directly, every REFLEXIVE_S, whose
     PROBE_ACK carries our source as the hub saw it. Two hubs seeing different ports make us
     HARD (natclass.py). A change is reported to the server (`on_candidates`: the endpoints
     message) and restarts the punches' backoff.
  2. Peer candidates: the netmap's endpoints of the peer (reported, observed, local, reflexive:
     `PeerConfig.candidates`), and what its CALLs carry.
  3. Each peer whose handshakes go through a hub (`peer.hub`, no direct control link) and that
     has keys gets a Punch and a PathChoice. The punch exchanges CALLs through the relay and
     probes; `Validated` hands the address to the choice, which takes the direct path at once;
     the choice's probes keep it alive (and the NAT mappings open) and drop it within 3 s when
     it stops answering; the punch then tries again after its backoff. Every change is applied
     through paths/select.py (`resolve`), which moves `peer.data_hub` and flushes parked packets.
  4. Answers: every authenticated PROBE gets a PROBE_ACK (never larger: disco.ack_fits) to its
     source (or back through the hub it came through), carrying that source; a direct probe from
     a relayed peer is also told to its punch (a peer-reflexive candidate, probed back).
     Unauthenticated frames never get here: the data path drops and counts them.
  5. Timers run on `tick`, every FINE_TICK_S while an attempt is in flight (so the synchronised
     start is not rounded to the agent's tick) and every COARSE_TICK_S otherwise.

Handshakes and rekeys of a punched peer keep going through its hub (RELAY_HANDSHAKE on the hub's
control link): they are 1.6-14 KB (TCP, not UDP) and the hub link is there anyway; only the data
takes the punched path. A direct control link (the peer's address can be dialed) makes all of
this unnecessary: such a peer is direct through its link ("lan" or "public" in status).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable

from .paths.candidates import Candidate, CandidateError, check_endpoint, direct_kind, local_candidates
from .paths.choice import DIRECT, PathChanged, PathChoice, SendPathProbe
from .paths.natclass import classify
from .paths.punch import Failed, Punch, SendCall, SendProbe, State, Validated
from .protocol import disco
from .protocol.disco import CandidateKind, DiscoError, NatClass
from .protocol.endpoints import endpoint_text
from .protocol.frames import FrameType
from .tunnel.datapath import Peer

__all__ = ["COARSE_TICK_S", "FINE_TICK_S", "Traversal"]

log = logging.getLogger(__name__)

FINE_TICK_S = 0.02
COARSE_TICK_S = 0.25
REFLEXIVE_S = 20.0  # ask each hub again (well inside the 30 s an unanswered UDP mapping lives)
REFLEXIVE_RETRY_S = 1.0  # until the first answer
LOCAL_REFRESH_S = 60.0
NAT_GRACE_S = 2.0  # wait this long for the hubs' answers (our NAT class) before a first punch
ACTIVE_WINDOW_S = 10.0  # traffic within this long: probe the paths at the active rates
PATH_HISTORY = 16
_PROBE = int(FrameType.PROBE)
_ACK = int(FrameType.PROBE_ACK)
_CALL = int(FrameType.CALL)
_NETMAP_KINDS = {
    "reported": CandidateKind.CONFIGURED,
    "observed": CandidateKind.OBSERVED,
    "local": CandidateKind.LOCAL,
    "reflexive": CandidateKind.REFLEXIVE,
}


class _PeerState:
    __slots__ = ("choice", "punch")

    def __init__(self, punch: Punch) -> None:
        self.punch = punch
        self.choice: PathChoice | None = None


class Traversal:
    def __init__(
        self,
        local_peer_id: str,
        peers,
        datapath,
        *,
        udp_port: int,
        mtu: int,
        clock: Callable[[], float],
        resolve: Callable[[Peer], None],
        hub_ids: Callable[[], Iterable[str]],
        interface_addresses: Callable[[], list[tuple[str, int, str]]],
        skip_interfaces: Iterable[str],
        skip_networks: Callable[[], Iterable],
        on_candidates: Callable[[list[Candidate]], None],
        spawn: Callable,
        enabled: bool = True,
        new_txid: Callable[[], bytes] = lambda: secrets.token_bytes(8),
    ) -> None:
        """`enabled`: punch and choose data paths (enrolled mode; serverless mode only keeps the
        path history and the local addresses for status); `peers`: the PeerSet; `resolve(peer)`:
        choose the peer's path again (paths/select.py); `hub_ids()`: the netmap's relays;
        `interface_addresses()`: blocking, run in a thread; `skip_networks()`: the overlay and
        the prefixes routed into it; `on_candidates(ours)`: report our candidates (the server
        link); `spawn(coro)`: a task of the agent."""
        self.our_id = local_peer_id
        self.peers = peers
        self.datapath = datapath
        self.udp_port = udp_port
        self.mtu = mtu
        self.clock = clock
        self.resolve = resolve
        self.hub_ids = hub_ids
        self.interface_addresses = interface_addresses
        self.skip_interfaces = tuple(skip_interfaces)
        self.skip_networks = skip_networks
        self.on_candidates = on_candidates
        self.spawn = spawn
        self.enabled = enabled
        self.new_txid = new_txid
        self.states: dict[str, _PeerState] = {}
        self.local: list[Candidate] = []
        self.local_networks: list = []
        self.observed: dict[str, tuple[str, int]] = {}  # hub peer id -> our address as it saw it
        self.nat = NatClass.UNKNOWN
        self.reflexive_txid = new_txid()
        self.reflexive_sent: dict[str, float] = {}  # hub peer id -> last probe
        self.reflexive_seq = 0
        self.reflexive_first: float | None = None  # the first hub probe went out
        self.local_at: float | None = None
        self.history: dict[str, deque] = {}  # peer id -> (clock, path, how, reason)
        self.reasons: dict[str, str] = {}  # peer id -> why the next change happens
        self.reported: tuple = ()
        self.busy = False

    # --- our candidates -----------------------------------------------------------------------
    def ours(self) -> list[Candidate]:
        out = list(self.local)
        seen = {c.addr for c in out}
        for addr in sorted(set(self.observed.values())):
            if addr not in seen:
                seen.add(addr)
                out.append(Candidate(CandidateKind.REFLEXIVE, *addr))
        return out[: disco.MAX_CANDIDATES]

    def _ours_changed(self, now: float) -> None:
        ours = tuple(self.ours())
        if ours == self.reported:
            return
        self.reported = ours
        own = [c.addr for c in ours]
        for st in self.states.values():
            st.punch.remote.set_own(own)
            st.punch.candidates_changed(now)
        self.on_candidates(list(ours))

    async def refresh_local(self) -> None:
        try:
            addrs = await asyncio.to_thread(self.interface_addresses)
        except Exception as exc:  # netlink trouble: keep what we had, try again later
            log.warning("interface addresses: %s: %s", type(exc).__name__, exc)
            return
        skip = list(self.skip_networks())
        self.local = local_candidates(
            addrs, self.udp_port, skip_interfaces=self.skip_interfaces, skip_networks=skip
        )
        nets = []
        for ip, plen, ifname in addrs:
            if ifname in self.skip_interfaces:
                continue
            try:
                nets.append(ipaddress.ip_interface(f"{ip}/{plen}").network)
            except ValueError:
                continue
        self.local_networks = nets
        self.nat = classify(self.observed, [c.ip for c in self.local], self.udp_port)
        self._ours_changed(self.clock())

    # --- the peer set changed (peers.PeerSet listener) ----------------------------------------
    def peer_added(self, peer: Peer) -> None:
        pid = peer.config.peer_id
        st = _PeerState(
            Punch(
                self.our_id,
                pid,
                new_txid=self.new_txid,
                full_size=max(self.mtu, 64),
                small_size=disco.PROBE_MIN_PAYLOAD,
            )
        )
        st.punch.remote.set_own(c.addr for c in self.reported)
        self.states[pid] = st
        self.history[pid] = deque(maxlen=PATH_HISTORY)
        self._netmap_candidates(peer, st)

    def peer_removed(self, peer: Peer, revoked: bool) -> None:
        pid = peer.config.peer_id
        self.states.pop(pid, None)
        self.history.pop(pid, None)
        self.reflexive_sent.pop(pid, None)
        self.observed.pop(pid, None)
        for other in self.peers:  # relayed through it: paths/select.py moves their data next
            if (other.hub is peer and other.data_hub is not None) or other.data_hub is peer:  # (in order)
                self.reasons[other.config.peer_id] = "relay_gone"

    def peer_changed(self, peer: Peer, old_config, reset_sessions: bool) -> None:
        st = self.states.get(peer.config.peer_id)
        if st is None:
            return
        if reset_sessions and st.choice is not None:
            self._choice_events(peer, st, st.choice.forget_direct(self.clock(), "identity_changed"))
        self._netmap_candidates(peer, st)

    def _netmap_candidates(self, peer: Peer, st: _PeerState) -> None:
        now = self.clock()
        cands = [
            Candidate(_NETMAP_KINDS[src], ip, port)
            for src, ip, port in peer.config.candidates
            if src in _NETMAP_KINDS
        ]
        if st.punch.remote.replace_kinds(set(_NETMAP_KINDS.values()), cands, now):
            st.punch.candidates_changed(now)

    # --- the data path of a relayed peer (paths/select.py asks) -------------------------------
    def data_path(self, peer: Peer, hub: Peer) -> Peer | None:
        if not self.enabled:
            return hub
        st = self.states.get(peer.config.peer_id)
        choice = None if st is None else st.choice
        if choice is None or choice.current is None:
            return hub
        if choice.current == DIRECT:
            return None if choice.direct_addr is not None else hub
        other = self.peers.get(choice.current)
        if other is None or other is peer or other.ring.current is None or other.data_hub is not None:
            return hub
        return other

    def path_changed(self, peer: Peer, reason: str | None = None) -> None:
        """Record a change of `peer.path` (status: when and why)."""
        pid = peer.config.peer_id
        hist = self.history.get(pid)
        if hist is None:
            return
        why = reason or self.reasons.pop(pid, None) or ("control_link" if peer.hub is None else "relay")
        hist.append((self.clock(), peer.path, self.how(peer), why))

    def _apply(self, peer: Peer, reason: str) -> None:
        """Apply our choice through paths/select.py, which tells `path_changed` if the path moved."""
        self.reasons[peer.config.peer_id] = reason
        self.resolve(peer)
        self.reasons.pop(peer.config.peer_id, None)

    def _ensure_choice(self, peer: Peer, st: _PeerState, now: float) -> PathChoice | None:
        if st.choice is None and peer.hub is not None and peer.ring.current is not None:
            st.choice = PathChoice(new_txid=self.new_txid, default_relay=peer.hub.config.peer_id, now=now)
        return st.choice

    # --- timers ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """The traversal's own timer loop (see the module docstring, step 5)."""
        while True:
            await asyncio.sleep(FINE_TICK_S if self.busy else COARSE_TICK_S)
            try:
                self.tick(self.clock())
            except Exception:  # a bug here must not stop the agent's data path
                log.exception("traversal tick failed")

    def tick(self, now: float) -> None:
        if self.local_at is None or now - self.local_at >= LOCAL_REFRESH_S:
            self.local_at = now
            self.spawn(self.refresh_local())
        if not self.enabled:
            return
        hubs = [h for h in self.hub_ids() if h != self.our_id]
        self._reflexive(now, hubs)
        busy = False
        ours = self.ours()
        # a first punch waits (briefly) for our NAT class: two hard NATs never try
        nat_known = (
            self.nat is not NatClass.UNKNOWN
            or self.reflexive_first is None
            or now - self.reflexive_first >= NAT_GRACE_S
        )
        for peer in list(self.peers):
            st = self.states.get(peer.config.peer_id)
            if st is None:
                continue
            keyed = peer.ring.current is not None
            if peer.hub is None:  # direct through its control link (or no relay at all)
                if st.choice is not None:
                    st.choice = None
                    st.punch.stop()
                continue
            choice = self._ensure_choice(peer, st, now)
            if choice is None or peer.hub is None:
                continue
            relays = [h for h in hubs if h != peer.config.peer_id and self._reachable_hub(h)]
            self._choice_events(peer, st, choice.set_relays(relays, peer.hub.config.peer_id, now))
            active = now - max(peer.last_tx, peer.last_rx) <= ACTIVE_WINDOW_S
            st.punch.remote.expire(now)
            self._punch_events(
                peer, st, st.punch.tick(now, wanted=keyed and nat_known, ours=ours, nat=self.nat)
            )
            if choice.current == DIRECT and peer.endpoint is not None and peer.endpoint != choice.direct_addr:
                choice.direct_addr = peer.endpoint  # the peer roamed (an authenticated frame moved it)
            self._choice_events(peer, st, choice.tick(now, active=active))
            busy |= st.punch.state in (State.OFFERED, State.ANSWERED, State.PROBING)
        self.busy = busy

    def _reachable_hub(self, hub_id: str) -> bool:
        hub = self.peers.get(hub_id)
        return (
            hub is not None
            and hub.data_hub is None
            and hub.ring.current is not None
            and hub.endpoint is not None
        )

    def _reflexive(self, now: float, hubs: list[str]) -> None:
        """Ask every hub we reach directly where our data port appears to come from."""
        for h in hubs:
            if not self._reachable_hub(h):
                continue
            last = self.reflexive_sent.get(h)
            period = REFLEXIVE_S if h in self.observed else REFLEXIVE_RETRY_S
            if last is not None and now - last < period:
                continue
            self.reflexive_sent[h] = now
            if self.reflexive_first is None:
                self.reflexive_first = now
            hub = self.peers.get(h)
            self.reflexive_seq = (self.reflexive_seq + 1) & 0xFFFFFFFF
            self.datapath.send_disco(
                hub, _PROBE, disco.pack_probe(self.reflexive_txid, self.reflexive_seq), dest=hub.endpoint
            )

    # --- events of the pure machines -----------------------------------------------------------
    def _punch_events(self, peer: Peer, st: _PeerState, events) -> None:
        for ev in events:
            if isinstance(ev, SendProbe):
                self.datapath.send_disco(
                    peer, _PROBE, disco.pack_probe(ev.txid, ev.sequence, ev.size), dest=ev.addr
                )
            elif isinstance(ev, SendCall):
                via = self._relay_for(peer, st)
                if via is not None:
                    self.datapath.send_disco(peer, _CALL, disco.pack_call(ev.call), via=via)
            elif isinstance(ev, Validated):
                if st.choice is None:
                    continue
                # "lan" only when the peer's address is on one of our own networks: a peer's
                # "local" candidate may be a routed public address (a host firewall, no NAT)
                kind = direct_kind(ev.addr, self.local_networks, punched=True)
                log.info(
                    "punched a direct path to %s at %s (%s, %.1f ms)",
                    peer.config.name,
                    endpoint_text(ev.addr),
                    kind,
                    ev.rtt * 1000,
                    extra={"event": "punch.validated", "peer_id": peer.config.peer_id, "how": kind},
                )
                peer.endpoint = ev.addr
                self._choice_events(peer, st, st.choice.validated(ev.addr, kind, self.clock()))
            elif isinstance(ev, Failed):
                log.info("hole punching with %s: %s", peer.config.name, ev.reason,
                         extra={"event": "punch.failed", "peer_id": peer.config.peer_id, "reason": ev.reason})

    def _choice_events(self, peer: Peer, st: _PeerState, events) -> None:
        for ev in events:
            if isinstance(ev, SendPathProbe):
                payload = disco.pack_probe(ev.txid, ev.sequence)
                if ev.path == DIRECT:
                    if st.choice is not None and st.choice.direct_addr is not None:
                        self.datapath.send_disco(peer, _PROBE, payload, dest=st.choice.direct_addr)
                else:
                    hub = self.peers.get(ev.path)
                    if hub is not None and hub is not peer:
                        self.datapath.send_disco(peer, _PROBE, payload, via=hub)
            elif isinstance(ev, PathChanged):
                if ev.reason in ("direct_timeout", "direct_loss"):
                    st.punch.path_lost(self.clock())
                    log.info("direct path to %s lost (%s): back to the relay", peer.config.name, ev.reason,
                             extra={"event": "punch.path_lost", "peer_id": peer.config.peer_id,
                                    "reason": ev.reason})
                self._apply(peer, ev.reason)

    def _relay_for(self, peer: Peer, st: _PeerState) -> Peer | None:
        """The hub a CALL goes through: the relay the data uses, else the handshake hub."""
        choice = st.choice
        if choice is not None and choice.current not in (None, DIRECT):
            hub = self.peers.get(choice.current)
            if hub is not None and hub is not peer and hub.ring.current is not None:
                return hub
        hub = peer.hub
        return hub if hub is not None and hub.ring.current is not None else None

    # --- frames from the data path --------------------------------------------------------------
    def on_disco(self, peer: Peer, ftype: int, payload: bytes, addr, hub: Peer | None, now: float) -> None:
        """An authenticated PROBE, PROBE_ACK or CALL from `peer` (from `addr`, or through `hub`)."""
        try:
            if ftype == _PROBE:
                self._on_probe(peer, disco.parse_probe(payload), addr, hub, now)
            elif ftype == _ACK:
                self._on_ack(peer, disco.parse_ack(payload), addr, hub, now)
            else:
                self._on_call(peer, disco.parse_call(payload), now)
        except DiscoError:
            self.datapath.drops.malformed += 1

    def _on_probe(self, peer: Peer, probe: disco.Probe, addr, hub: Peer | None, now: float) -> None:
        observed = None if hub is not None else (addr[0], addr[1])
        ack = disco.pack_ack(probe.txid, probe.sequence, observed)
        if not disco.ack_fits(probe.size, ack):  # cannot happen with a parsed probe; never amplify
            return
        if hub is not None:
            self.datapath.send_disco(peer, _ACK, ack, via=hub)
            return
        self.datapath.send_disco(peer, _ACK, ack, dest=addr)
        st = self.states.get(peer.config.peer_id)
        if st is not None and st.choice is not None and peer.hub is not None:
            self._punch_events(peer, st, st.punch.on_probe_from((addr[0], addr[1]), now))

    def _on_ack(self, peer: Peer, ack: disco.Ack, addr, hub: Peer | None, now: float) -> None:
        pid = peer.config.peer_id
        if ack.txid == self.reflexive_txid and hub is None:
            if (
                ack.observed is not None
                and pid in set(self.hub_ids())
                and self.observed.get(pid) != ack.observed
            ):
                try:
                    check_endpoint(*ack.observed)
                except CandidateError:
                    self.datapath.drops.malformed += 1
                    return
                self.observed[pid] = ack.observed
                self.nat = classify(self.observed, [c.ip for c in self.local], self.udp_port)
                log.info(
                    "hub %s sees our data port as %s (NAT: %s)",
                    peer.config.name,
                    endpoint_text(ack.observed),
                    self.nat.name.lower(),
                    extra={"event": "nat.observed", "peer_id": pid, "nat": self.nat.name.lower()},
                )
                self._ours_changed(now)
            return
        st = self.states.get(pid)
        if st is None:
            return
        if hub is None and ack.txid == st.punch.txid:
            self._punch_events(peer, st, st.punch.on_ack(ack.txid, ack.sequence, (addr[0], addr[1]), now))
        elif st.choice is not None:
            st.choice.on_ack(ack.txid, ack.sequence, now)

    def _on_call(self, peer: Peer, call: disco.Call, now: float) -> None:
        st = self.states.get(peer.config.peer_id)
        if not self.enabled or st is None or self._ensure_choice(peer, st, now) is None:
            return  # a peer we reach through a direct link has nothing to punch
        self._punch_events(peer, st, st.punch.on_call(call, now, ours=self.ours(), nat=self.nat))
        self.busy = True

    # --- status ---------------------------------------------------------------------------------
    def how(self, peer: Peer) -> str | None:
        """How the direct path was made: "lan", "public", "punched"; None while relayed."""
        if peer.data_hub is not None:
            return None
        st = self.states.get(peer.config.peer_id)
        if peer.hub is not None and st is not None and st.choice is not None and st.choice.current == DIRECT:
            return st.choice.direct_kind
        if peer.endpoint is None:
            return None
        return direct_kind(peer.endpoint, self.local_networks, punched=False)

    def node_fields(self) -> dict:
        return {
            "nat": {
                "class": self.nat.name.lower(),
                "reflexive": {h: endpoint_text(a) for h, a in sorted(self.observed.items())},
                "candidates": [endpoint_text(c.addr) for c in self.ours()],
            }
        }

    def peer_fields(self, peer: Peer, now: float) -> dict:
        pid = peer.config.peer_id
        st = self.states.get(pid)
        hist = self.history.get(pid) or ()
        last = hist[-1] if hist else None
        out = {
            "path_how": self.how(peer),
            "path_reason": None if last is None else last[3],
            "path_since_s": None if last is None else round(now - last[0], 3),
            # "path_changes" (every entry this history ever had, not only the last 16) is
            # peer.stats.path_changes, counted by paths/select.py: status.peer_status writes it
            "path_history": [
                {"ago_s": round(now - t, 3), "path": p, "how": h, "reason": r} for t, p, h, r in hist
            ],
            "punch": None,
            "direct_rtt_ms": None,
            "relay_rtt_ms": None,
            "candidates": [],
        }
        if st is not None:
            p = st.punch
            out["candidates"] = [f"{c.kind.name.lower()} {endpoint_text(c.addr)}" for c in p.remote.ordered()]
            if st.choice is not None:
                out["punch"] = {
                    "state": p.state.value,
                    "reason": p.last_reason,
                    "peer_nat": p.remote_nat.name.lower(),
                    "next_in_s": round(max(0.0, p.next_at - now), 3) if p.state is State.WAIT else None,
                }
                out["direct_rtt_ms"] = st.choice.rtt_ms(DIRECT)
                current = st.choice.current
                relay = current if current is not None and current != DIRECT else (
                    None if peer.hub is None else peer.hub.config.peer_id)
                out["relay_rtt_ms"] = None if relay is None else st.choice.rtt_ms(relay)
        return out
