"""Path MTU probing at run time: carries out paths/plpmtu.py for every address we send data to
directly, and hands what it finds to the UDP socket (`UdpSocket.set_probed_mtu`), whose
`path_mtus` the data path enforces (tunnel/datapath.py step 3b answers the packets too big for a
path with ICMP into the TUN).

Who is probed: every peer with keys whose data goes to it directly (`peer.data_hub is None`, an
endpoint known): a directly reachable peer, a punched one, and each hub, whose path carries the
data relayed through it. A relayed peer's data takes its hub's path, so the hub's result covers
it. The full size probed is the largest datagram we send on that path: a direct frame of the
overlay MTU, or, on a path that carries relayed frames (`relays()`), a relayed frame of it,
RELAY_OVERHEAD - FRAME_OVERHEAD bytes more; a peer whose role changes gets a fresh search. The
probes are PROBE frames under the pair's disco keys, to the peer's endpoint; any agent answers
them (traversal.py), so a peer needs nothing new. Their answers carry our `txid` and come here
(`on_ack`) instead of to the traversal.

It runs every TICK_S. At most STARTS_PER_TICK first checks begin per tick, so a hub that learns
of thousands of peers at once does not send thousands of full-size probes in one burst. A peer
that moves to another address gets a fresh search; what was found for the old address is
forgotten.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection

from .paths.plpmtu import Found, MtuSearch, SendMtuProbe, ladder
from .protocol import disco
from .protocol.disco import DiscoError
from .protocol.endpoints import endpoint_text
from .protocol.frames import FRAME_OVERHEAD, RELAY_OVERHEAD, FrameType, underlay_headers
from .tunnel.datapath import Peer
from .tunnel.tun import MIN_OVERLAY_MTU

__all__ = ["STARTS_PER_TICK", "TICK_S", "PathMtuProbes"]

log = logging.getLogger(__name__)

STARTS_PER_TICK = 16
TICK_S = 0.5  # the search's timers are whole seconds: every other agent tick is enough
_PROBE = int(FrameType.PROBE)


class _Probed:
    __slots__ = ("address", "relay", "search")

    def __init__(self, address: tuple, relay: bool, search: MtuSearch) -> None:
        self.address = address
        self.relay = relay
        self.search = search


class PathMtuProbes:
    def __init__(self, peers, datapath, udp, *, mtu: int, clock: Callable[[], float],
                 relays: Callable[[], Collection[str] | None] = tuple,
                 new_txid: Callable[[], bytes] = lambda: secrets.token_bytes(8)) -> None:
        """`peers`: the PeerSet; `mtu`: the overlay MTU; `udp`: the data socket
        (`set_probed_mtu`); `relays()`: the peer ids whose paths carry relayed frames, None for
        every peer (we are a hub: we forward relayed frames to all of them)."""
        self.peers = peers
        self.datapath = datapath
        self.udp = udp
        self.mtu = mtu
        self.clock = clock
        self.relays = relays
        self.txid = new_txid()
        self.probed: dict[str, _Probed] = {}  # peer id -> its search
        self.next_tick = 0.0

    def sizes(self, address: tuple, relay: bool) -> tuple[int, ...]:
        overhead = underlay_headers(address) + FRAME_OVERHEAD
        full = self.mtu + (RELAY_OVERHEAD - FRAME_OVERHEAD if relay else 0)
        floor = min(full, MIN_OVERLAY_MTU[6 if ":" in address[0] else 4] - overhead)
        return ladder(full, overhead, floor)

    # --- timers ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if now < self.next_tick:
            return
        self.next_tick = now + TICK_S
        starts = STARTS_PER_TICK
        relays = self.relays()
        for peer in self.peers:
            pid = peer.config.peer_id
            address = peer.endpoint if peer.data_hub is None and peer.ring.current is not None else None
            relay = relays is None or pid in relays
            entry = self.probed.get(pid)
            if entry is not None and (entry.address != address or entry.relay != relay):
                self._forget(pid)
                entry = None
            if address is None:
                continue
            if entry is None:
                if starts == 0:
                    continue
                starts -= 1
                search = MtuSearch(self.sizes(address, relay), now=now)
                entry = self.probed[pid] = _Probed(address, relay, search)
            self._events(peer, entry, entry.search.tick(now))

    def _events(self, peer: Peer, entry: _Probed, events) -> None:
        for ev in events:
            if isinstance(ev, SendMtuProbe):
                self.datapath.send_disco(peer, _PROBE, disco.pack_probe(self.txid, ev.sequence, ev.size),
                                         dest=entry.address)
            elif isinstance(ev, Found):
                self._found(peer, entry, ev.fits)

    def _found(self, peer: Peer, entry: _Probed, fits: int | None) -> None:
        if fits is None:
            self.udp.set_probed_mtu(entry.address, None)
            log.info("the path to %s at %s carries full-size frames again", peer.config.name,
                     endpoint_text(entry.address), extra={"event": "pmtu.ok", "peer_id": peer.config.peer_id})
            return
        self.udp.set_probed_mtu(entry.address, fits + FRAME_OVERHEAD + underlay_headers(entry.address))
        log.info("the path to %s at %s drops frames above %d-byte packets without telling (no ICMP): "
                 "bigger packets to it are answered with ICMP too big", peer.config.name,
                 endpoint_text(entry.address), fits,
                 extra={"event": "pmtu.narrow", "peer_id": peer.config.peer_id, "fits": fits})

    def _forget(self, pid: str) -> None:
        entry = self.probed.pop(pid, None)
        if entry is not None and entry.search.fits is not None:
            self.udp.set_probed_mtu(entry.address, None)

    # --- frames -----------------------------------------------------------------------------------
    def owns(self, payload: bytes) -> bool:
        """Whether a PROBE_ACK payload answers one of our probes (its txid)."""
        return payload[:8] == self.txid

    def on_ack(self, peer: Peer, payload: bytes, hub: Peer | None, now: float) -> None:
        """An authenticated PROBE_ACK from `peer` with our txid."""
        try:
            ack = disco.parse_ack(payload)
        except DiscoError:
            self.datapath.drops.malformed += 1
            return
        entry = self.probed.get(peer.config.peer_id)
        if hub is None and entry is not None:
            self._events(peer, entry, entry.search.on_ack(ack.sequence, now))

    # --- the peer set changed (peers.PeerSet listener) ----------------------------------------
    def peer_added(self, peer: Peer) -> None:
        pass

    def peer_removed(self, peer: Peer, revoked: bool) -> None:
        self._forget(peer.config.peer_id)

    def peer_changed(self, peer: Peer, old_config, reset_sessions: bool) -> None:
        pass

    # --- status ---------------------------------------------------------------------------------
    def peer_fields(self, peer: Peer, now: float) -> dict:
        entry = self.probed.get(peer.config.peer_id)
        return {"path_mtu": None if entry is None else entry.search.status(now)}
