"""Both packet pipelines of the agent, run as raw `loop.add_reader` drain callbacks on one thread.

Outbound (TUN readable -> `on_tun`), per wake-up up to TUN_BATCH packets (TSO: segments):
  1. read one IP packet from the TUN fd (non-blocking; stop at EAGAIN; strip the vnet header).
     With TUN offloads on (tun.py) a read may be a TCP super-packet: tso.split cuts it into
     MSS-sized segments, each sealed as its own DATA frame with CSUM_PARTIAL (its checksum
     is left to the receiving kernel); a partial UDP/TCP checksum likewise   drop `malformed`
     Chunk mode (chunks.py): a super-packet for a direct peer that asked for chunks is instead
     sealed whole as one CHUNK unit (one counter, several datagrams; its flow noted as in step 3)
     and sent at once, after what the drain had queued for that endpoint (step 7)
  2. take the destination address (IPv4 bytes 16..20, IPv6 24..40)     drop `malformed` if too short
  3. route lookup: overlay address -> peer (routing.table, longest prefix)  drop `no_route`
     (and, in enrolled mode with the DHT, `on_no_route(dst)`: it may look the address up;
     called for such packets only, so the normal path pays nothing);
     with an access policy (`filter`, nodeagent/policy/filter.py) the flow is noted
     (`track`: the flows this node starts, whose replies step 9 of inbound admits), once per
     read (a TSO super-packet is one flow); outbound packets are never dropped by the policy
 3b. a path known to be narrower than the frame this packet needs (udp.py `path_mtus`: what
     the kernel knows, read when the path refused a GSO send, and what our own probes found of
     a path that drops big frames without an ICMP, pathmtu.py): a packet that must not be
     fragmented (IPv4 with DF, IPv6) is answered into the TUN with ICMP "fragmentation needed" /
     "packet too big" (toobig.py) instead of leaving as IP fragments, at most TOO_BIG_RATE per
     second (past it, the frame leaves as before); a TSO super-packet is judged by its first
     segment. An IPv4 packet that may be fragmented (no DF) is cut into fragments whose frames
     fit, as a router would (ipfrag.py; its checksum completed first), and those are sealed
     (`fragmented` counts them).                                          drop `too_big`
     Costs one test of an empty dict per packet while no path is narrow.
  4. pick the peer's sending keypair (KeyRing.sending). None, or no UDP endpoint known yet ->
     park the packet in the peer's bounded pending queue (and ask for a handshake: sessions.py);
     no counter is consumed for a frame that cannot leave             drop `queue_full` when full
  5. seal: DATA frame under the end-to-end keypair (frames.seal, counter = Keypair.next_counter);
     a packet parked in step 4 gets its checksum completed first (tso.finish)
  6. relayed peer (`peer.data_hub`, the hub its data goes through: paths/select.py): wrap the
     sealed frame in a RELAY envelope under the hub keypair
  7. append to the batch of its UDP destination; after the drain, one GSO sendmsg per run
     (udp.send_batch); datagrams the socket refused                   drop `queue_full`

Inbound (UDP readable -> `on_udp`), per wake-up up to UDP_CALLS GRO reads:
  1. recvmsg_into; cut the GRO buffer into datagrams at the segment size
  2. parse_header (type, flags, length checked)                       drop `malformed`
  3. receiver index -> (peer, keypair) of a live session               drop `unknown_session`
     CHUNK: a piece goes to chunks.py (reassembly, then 5-9 once for the whole unit); a
     KEEPALIVE with CHUNK_CONTROL, after 5-7, to chunks.on_control (the negotiation)
  4. RELAY, RELAYED: the relay envelopes go to relay.py. A RELAY (we are the hub) is checked and
     forwarded, never opened here; a RELAYED from our hub, once its hop checked, continues at 5
     with the inner frame and the source peer named inside the envelope.
  5. open_frame: AEAD tag                                              drop `bad_tag`
  6. replay window, ONLY after the tag verified                        drop `replay`
  7. an authenticated frame: rotate `next` keys, count gaps (lost_frames), and roam: a direct
     frame from a new source address moves the peer's endpoint (unauthenticated ones never do)
     PROBE, PROBE_ACK, CALL (path discovery, protocol/disco.py): opened with the disco keys and
     their own replay window, then handed to `on_disco` (traversal.py), which answers probes;
     they never move an endpoint and never count as data
  8. DATA: the inner source must route back to the same peer (its overlay IP or a prefix
     routed to it: the same table as step 3 of outbound)               drop `spoofed_source`
     KEEPALIVE: answer an echo request, or turn an echo into rtt_ms
  9. DATA, with an access policy (`filter`): `filter.admit` (an established flow is one dict
     probe); with a vnet TUN gro.py asks it once per run of segments of one flow, not per
     segment                                                           drop `policy`
 10. write the IP packet to the TUN: with a vnet TUN, runs of in-order segments of one TCP
     flow are merged into one GSO write at the end of the drain (gro.py), and a CSUM_PARTIAL
     packet written alone carries NEEDS_CSUM; without a vnet header tso.finish completes it

Wake-ups: the loop calls `tun_ready` / `udp_ready` (which run the drains above). A UDP drain
that wrote to the TUN drains the TUN at once: the kernel answers a packet written to the TUN
inside the write (an echo reply, a TCP ACK), so the answer is already queued. With
SHADOWMESH_BUSY_POLL_US a TUN wake-up then keeps polling both fds for up to that long, until a
datagram arrives (`_linger`).

Ordering and locking: everything runs on the event-loop thread, so counters and rings need no
locks; the only shared state with the control channel (sessions installed, endpoints learned)
is touched from the same thread. Nothing is ever sent in reply to a datagram that failed 2-6.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..policy.filter import PacketFilter
from ..protocol.endpoints import endpoint_text
from ..protocol.frames import (
    FRAME_OVERHEAD,
    RELAY_OVERHEAD,
    BadTag,
    FrameError,
    FrameFlags,
    FrameType,
    open_frame,
    pack_echo,
    parse_echo,
    parse_header,
    seal,
    ts_diff,
    ts_ms,
    underlay_headers,
    wrap_relay,
)
from ..protocol.keys import Keypair, KeyRing, NonceExhausted
from ..ratelimit import TokenBucket
from ..routing.table import RouteTable
from ..stats import Drops, LossTracker, PeerStats, RelayStats
from .chunks import ChunkPath
from .gro import TunWriter
from .ipfrag import fragment_v4
from .relay import on_relay, on_relayed
from .toobig import too_big
from .tso import VNET_HDR_SIZE, OffloadError, finish, split
from .udp import RECV_BUFFER

if TYPE_CHECKING:
    from ..config import PeerConfig

__all__ = ["DataPath", "Peer"]

log = logging.getLogger(__name__)

TUN_BATCH = 64  # tuning: packets (TSO: segments) per TUN drain
TUN_READ = 65536 + 256  # one read: an MTU-sized packet, or a TSO super-packet of up to 64 KB
# A/B knob: SHADOWMESH_CSUM_PARTIAL=0 makes tso.py compute every checksum in Python (no
# CSUM_PARTIAL frames); the default leaves them to the receiving kernel (tso.py explains)
PARTIAL_CSUM = os.environ.get("SHADOWMESH_CSUM_PARTIAL", "1") != "0"
UDP_CALLS = 32  # tuning: GRO reads per UDP wake-up
PENDING_MAX = 64  # tuning: packets parked per peer while its handshake runs
TOO_BIG_RATE = 100.0  # ICMP "too big" answers written into the TUN per second (and burst)


def _busy_poll_s(raw: str) -> float:
    """SHADOWMESH_BUSY_POLL_US in seconds; a value that is not a whole number >= 0 is ignored
    (0) with a warning naming it."""
    try:
        us = int(raw)
    except ValueError:
        us = -1
    if us < 0:
        log.warning("SHADOWMESH_BUSY_POLL_US=%r is not a whole number of microseconds >= 0: ignored", raw)
        return 0.0
    return us / 1e6


# A/B knob: after a wake-up, keep polling the TUN and UDP fds (non-blocking) for this long
# before the loop may sleep again (`_linger`); 0: never
BUSY_POLL_S = _busy_poll_s(os.environ.get("SHADOWMESH_BUSY_POLL_US", "0"))

_DATA = int(FrameType.DATA)
_KEEPALIVE = int(FrameType.KEEPALIVE)
_RELAY = int(FrameType.RELAY)
_RELAYED = int(FrameType.RELAYED)
_ECHO_REQUEST = int(FrameFlags.ECHO_REQUEST)
_CSUM_PARTIAL = int(FrameFlags.CSUM_PARTIAL)
_CHUNK = int(FrameType.CHUNK)
_CHUNK_CONTROL = int(FrameFlags.CHUNK_CONTROL)
_NO_OFFLOAD = bytes(2)  # virtio_net_hdr flags and gso_type both zero


class Peer:
    """The data path's view of one configured peer."""

    __slots__ = ("_hub", "bucket", "config", "data_hub", "echo_sent", "endpoint", "id_bytes",
                 "last_handshake", "last_rx", "last_tx", "pending", "ring", "stats")

    def __init__(self, config: PeerConfig, relay_rate: float) -> None:
        self.config = config
        self.id_bytes = bytes.fromhex(config.peer_id)
        self.ring = KeyRing()
        self.stats = PeerStats()
        self.endpoint: tuple | None = None  # UDP address: UDP_ENDPOINT, roaming, or a punched path
        self._hub: Peer | None = None
        self.data_hub: Peer | None = None  # the relay data goes through; None: to `endpoint`
        self.pending: deque[bytes] = deque()
        self.last_handshake: float | None = None
        self.echo_sent: tuple[int, float] | None = None  # (header ms stamp, clock) of our last echo request
        self.last_rx = self.last_tx = 0.0
        self.bucket = TokenBucket(relay_rate)  # the cap on what we relay for it as a hub (relay.py)

    @property
    def hub(self) -> Peer | None:
        """The relay of this peer's handshakes (config.via, while no direct link: paths/select.py).
        Setting it sets the data path's `data_hub` too; the path choice (paths/select.py,
        traversal.py) may then move the data alone to a punched path or another relay."""
        return self._hub

    @hub.setter
    def hub(self, hub: Peer | None) -> None:
        self._hub = self.data_hub = hub

    @property
    def path(self) -> str:
        return "direct" if self.data_hub is None else f"relay:{self.data_hub.config.peer_id}"


class DataPath:
    def __init__(self, tun_fd: int, udp, peers: list[Peer], *, is_hub: bool, on_handshake_needed,
                 clock=time.monotonic, vnet: bool = False) -> None:
        self.tun_fd = tun_fd
        # vnet: the TUN speaks virtio_net_hdr (tun.py); reads carry a 10-byte header to strip,
        # writes go through the userspace-GRO writer (gro.py)
        self.vnet = vnet
        self.writer = TunWriter(tun_fd) if vnet else None
        self.tso_reads = 0  # TUN reads that needed tso.split (super-packets, partial checksums)
        self.partial_csum = PARTIAL_CSUM
        self.udp = udp
        self.peers = peers
        self.by_id = {p.id_bytes: p for p in peers}
        self.is_hub = is_hub
        self.on_handshake_needed = on_handshake_needed  # callback(peer), rate-limited by sessions.py
        # callback(peer, frame type, payload, source address, hub or None, now) for an authenticated
        # PROBE, PROBE_ACK or CALL (traversal.py); None: they are dropped as malformed
        self.on_disco: Callable[[Peer, int, bytes, tuple, Peer | None, float], None] | None = None
        self.on_no_route: Callable[[bytes], None] | None = None  # packed destination no peer takes (the DHT)
        self.clock = clock
        self.drops = Drops()
        self.relay = RelayStats()
        self.sessions: dict[int, tuple[Peer, Keypair]] = {}  # our receiver index -> session
        # cryptokey routing: one table answers "which peer gets this destination" on the way out
        # and "may this peer send from this source" on the way in
        self.table = RouteTable.build((net, p) for p in peers for net in p.config.routed)
        self.route = self.table.lookup_packed
        # the access policy: None lets every packet in (a policy whose default is "allow");
        # replaced whole when the policy changes, like the table
        self.filter: PacketFilter | None = None
        self._buf = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buf)
        self.chunks = ChunkPath(self)  # chunk mode (chunks.py): whole super-packets as one AEAD unit
        self.busy_poll_s = BUSY_POLL_S
        self._poller: select.epoll | None = None
        self._udp_fd = udp.fileno() if hasattr(udp, "fileno") else -1
        # destination address -> path MTU, kept by udp.py; empty while every path takes our frames
        self.path_mtus: dict[tuple, int] = getattr(udp, "path_mtus", {})
        self.too_big_bucket = TokenBucket(TOO_BIG_RATE, TOO_BIG_RATE)
        self.fragmented = 0  # packets step 3b cut into IPv4 fragments for a narrow path

    # --- the event loop's reader callbacks ------------------------------------------------------
    def tun_ready(self) -> None:
        """The loop's callback for a readable TUN: drain it, then linger (`busy_poll_s`): what
        we just sent may be answered soon (a ping, a request)."""
        self.on_tun()
        if self.busy_poll_s:
            self._linger()

    def udp_ready(self) -> None:
        """The loop's callback for a readable UDP socket: `_udp_drain`. No lingering here: the
        answer to what arrived, if the kernel made one at once, has already left."""
        self._udp_drain()

    def _udp_drain(self) -> None:
        """Drain the UDP socket. A packet written to the TUN may have made the kernel answer at
        once (a ping's echo reply, a TCP ACK: the kernel runs its receive path inside the write),
        so when the drain wrote anything the TUN is drained right away, not in the loop's next
        round: one loop round less per reply."""
        writer = self.writer
        writes = -1 if writer is None else writer.writes
        self.on_udp()
        if writer is not None and writer.writes != writes:
            self.on_tun()

    def _linger(self) -> None:
        """Busy-poll both fds after a TUN wake-up until something arrives on the UDP socket (the
        answer to what was just sent, handled without a sleep and a wake-up) or `busy_poll_s`
        has passed, whichever is first. More TUN packets meanwhile are sent and the polling goes
        on. The deadline is fixed when it starts, so the loop's other work waits at most that long."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.epoll()
            poller.register(self.tun_fd, select.EPOLLIN)
            poller.register(self._udp_fd, select.EPOLLIN)
        clock = time.perf_counter
        end = clock() + self.busy_poll_s
        tun_fd = self.tun_fd
        while True:  # at least one round, however short the setting
            answered = False
            for fd, _events in poller.poll(0):
                if fd == tun_fd:
                    self.on_tun()
                else:
                    self._udp_drain()
                    answered = True
            if answered or clock() >= end:
                return

    def close(self) -> None:
        """Release what the data path opened itself (the busy-poll epoll); not the TUN or UDP."""
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    # --- sessions (called by the control side) ------------------------------------------------
    def install(self, peer: Peer, keypair: Keypair, *, confirmed: bool) -> None:
        now = self.clock()
        peer.ring.install(keypair, confirmed=confirmed, now=now)
        self.sessions[keypair.local_index] = (peer, keypair)
        peer.stats.trackers[keypair.local_index] = LossTracker()
        peer.stats.handshakes += 1
        peer.last_handshake = now
        self.sweep()
        self.flush_pending(peer)

    def sweep(self) -> None:
        """Forget sessions whose keypair left its ring or was wiped; expire old keys."""
        now = self.clock()
        for p in self.peers:
            p.ring.expire(now)
        for index, (peer, kp) in list(self.sessions.items()):
            if kp.wiped or peer.ring.lookup(index) is not kp:
                del self.sessions[index]
                peer.stats.retire(index)

    def drop_sessions(self, peer: Peer) -> None:
        peer.ring.wipe_all()
        self.chunks.forget(peer)
        self.sweep()

    def flush_pending(self, peer: Peer) -> None:
        if not peer.pending:
            return
        now = self.clock()
        out: dict[tuple, list[bytes]] = {}
        for _ in range(len(peer.pending)):  # a packet that still cannot leave goes back to the end
            self._seal_to(peer, peer.pending.popleft(), now, out)
        self._send(out)

    # --- outbound ---------------------------------------------------------------------------
    def _seal_to(self, peer: Peer, packet: bytes, now: float, out: dict, flags: int = 0) -> bool:
        """Seal one packet for `peer` and add it to `out`; False if it had to wait or was dropped.

        Nothing consumes a counter unless the frame can leave: a packet for a peer without keys,
        or whose UDP endpoint is not known yet (the link is up but UDP_ENDPOINT has not
        arrived), waits in the bounded pending queue instead (with its checksum completed:
        `flags` CSUM_PARTIAL says the packet's TCP/UDP checksum is partial, tso.py)."""
        hub = peer.data_hub
        kp = peer.ring.sending(now)
        hkp = None if hub is None else hub.ring.sending(now)
        dest = peer.endpoint if hub is None else hub.endpoint
        if kp is None or dest is None or (hub is not None and hkp is None):
            if len(peer.pending) >= PENDING_MAX:
                self.drops.queue_full += 1
            else:
                peer.pending.append(finish(packet) if flags else packet)
            if kp is None:
                self.on_handshake_needed(peer)
            elif hub is not None and hkp is None:
                self.on_handshake_needed(hub)
            return False
        ts = ts_ms(now)
        try:
            frame = seal(kp.send, _DATA, kp.remote_index, kp.next_counter(), ts, packet, flags)
            if hkp is not None:
                frame = wrap_relay(hkp.send, _RELAY, hkp.remote_index, hkp.next_counter(), ts, peer.id_bytes,
                                   frame)
        except NonceExhausted:
            self.on_handshake_needed(peer if hkp is None else hub)
            self.drops.queue_full += 1
            return False
        batch = out.get(dest)
        if batch is None:
            out[dest] = [frame]
        else:
            batch.append(frame)
        st = peer.stats
        st.tx_frames += 1
        st.tx_bytes += len(frame)
        peer.last_tx = now
        return True

    def _seal_segments(self, peer: Peer, segments: list[bytes], now: float, out: dict, flags: int) -> bool:
        """`_seal_to` for the segments of one super-packet (same peer, same keypair): the
        per-peer lookups once, then only seal per segment. Relayed peers, and peers that are
        not ready (the packets wait), take the per-packet path."""
        kp = peer.ring.sending(now)
        dest = peer.endpoint
        if peer.data_hub is not None or kp is None or dest is None:
            sent = False
            for segment in segments:
                sent |= self._seal_to(peer, segment, now, out, flags)
            return sent
        batch = out.get(dest)
        if batch is None:
            batch = out[dest] = []
        aead, index, counter, ts = kp.send, kp.remote_index, kp.next_counter, ts_ms(now)
        count = size = 0
        try:
            for segment in segments:
                frame = seal(aead, _DATA, index, counter(), ts, segment, flags)
                batch.append(frame)
                count += 1
                size += len(frame)
        except NonceExhausted:
            self.on_handshake_needed(peer)
            self.drops.queue_full += len(segments) - count
        st = peer.stats
        st.tx_frames += count
        st.tx_bytes += size
        if count:
            peer.last_tx = now
        return count > 0

    def on_tun(self) -> None:
        read = os.read
        fd = self.tun_fd
        route = self.route
        seal_to = self._seal_to
        path_mtus = self.path_mtus  # empty while every path takes our frames
        now = self.clock()
        out: dict[tuple, list[bytes]] = {}
        touched: set[Peer] = set()
        vnet = self.vnet
        complete = not self.partial_csum
        size = TUN_READ + (VNET_HDR_SIZE if vnet else 0)
        budget = TUN_BATCH
        while budget > 0:
            try:
                packet = read(fd, size)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("TUN read failed: %s", exc)
                break
            segments = None
            partial = False
            if vnet:
                if packet[:2] == _NO_OFFLOAD:  # flags 0, GSO_NONE: one complete packet
                    packet = packet[VNET_HDR_SIZE:]
                else:  # a TSO super-packet or a partial checksum (tun.py offloads on)
                    # a GSO super-packet (gso_type set) may leave as one CHUNK (chunks.py)
                    sent = packet[1] and self.chunks.try_send(packet, now, out, touched)
                    if sent:
                        budget -= sent
                        continue
                    try:
                        segments, partial = split(packet, complete)
                    except OffloadError:
                        self.drops.malformed += 1
                        budget -= 1
                        continue
                    packet = segments[0]
                    if not self.tso_reads:
                        log.info("TUN offloads in use: first TSO read gave %d packet(s)", len(segments))
                    self.tso_reads += 1
            budget -= 1 if segments is None else len(segments)
            version = packet[0] >> 4 if packet else 0
            if version == 4 and len(packet) >= 20:
                dst = packet[16:20]
            elif version == 6 and len(packet) >= 40:
                dst = packet[24:40]
            else:
                self.drops.malformed += 1
                continue
            peer = route(dst)
            if peer is None:
                self.drops.no_route += 1 if segments is None else len(segments)
                if self.on_no_route is not None:
                    self.on_no_route(dst)
                continue
            if self.filter is not None:
                self.filter.track(packet)
            if path_mtus and self._narrow(peer, packet, segments, partial, now, out, touched):
                continue
            if segments is None:
                if seal_to(peer, packet, now, out):
                    touched.add(peer)
            elif self._seal_segments(peer, segments, now, out, _CSUM_PARTIAL if partial else 0):
                touched.add(peer)
        self._send(out)
        for peer in touched:
            kp = peer.ring.current
            if kp is not None and kp.wants_rekey_sending(now):
                self.on_handshake_needed(peer)

    def _narrow(self, peer: Peer, packet: bytes, segments: list[bytes] | None, partial: bool, now: float,
                out: dict, touched: set) -> bool:
        """Step 3b: True when `packet` (the first of `segments` when it stands for several) was
        taken care of here: answered with ICMP "too big" and dropped, or cut into IPv4
        fragments that were sealed; False when it goes on (its frame fits the path, the path is
        not known narrow, or neither applies)."""
        hub = peer.data_hub
        dest = peer.endpoint if hub is None else hub.endpoint
        if dest is None:
            return False
        path_mtu = self.path_mtus.get(dest)
        if path_mtu is None:
            return False
        limit = path_mtu - underlay_headers(dest) - (FRAME_OVERHEAD if hub is None else RELAY_OVERHEAD)
        if len(packet) <= limit:
            return False
        answer = too_big(packet, limit)
        if answer is None:  # it may be fragmented: cut it as a router would (ipfrag.py)
            if segments is not None and len(segments) > 1:
                return False
            pieces = fragment_v4(finish(packet) if partial else packet, limit)
            if pieces is None:
                return False
            for piece in pieces:
                if self._seal_to(peer, piece, now, out):
                    touched.add(peer)
            self.fragmented += 1
            return True
        if not self.too_big_bucket.take(now):
            return False
        try:
            os.write(self.tun_fd, bytes(VNET_HDR_SIZE) + answer if self.vnet else answer)
        except OSError as exc:
            log.debug("TUN write failed: %s", exc)
        self.drops.too_big += 1 if segments is None else len(segments)
        return True

    def _send(self, out: dict) -> None:
        for dest, frames in out.items():
            failed = self.udp.send_batch(frames, dest)
            if failed:
                self.drops.queue_full += failed

    def send_keepalive(self, peer: Peer, echo: tuple[int, float] | None = None) -> bool:
        """KEEPALIVE to `peer`: an echo request (echo=None) or the answer to one."""
        now = self.clock()
        hub = peer.data_hub
        kp = peer.ring.sending(now)
        hkp = None if hub is None else hub.ring.sending(now)
        dest = peer.endpoint if hub is None else hub.endpoint
        if kp is None or dest is None or (hub is not None and hkp is None):
            return False
        ts = ts_ms(now)
        if echo is None:
            payload, flags = b"", _ECHO_REQUEST
            peer.echo_sent = (ts, now)
        else:
            payload, flags = pack_echo(echo[0], int((now - echo[1]) * 1000)), 0
        try:
            frame = seal(kp.send, _KEEPALIVE, kp.remote_index, kp.next_counter(), ts, payload, flags)
            if hkp is not None:
                frame = wrap_relay(hkp.send, _RELAY, hkp.remote_index, hkp.next_counter(), ts, peer.id_bytes,
                                   frame)
        except NonceExhausted:
            self.on_handshake_needed(peer if hkp is None else hub)
            return False
        if self.udp.sendto(frame, dest):
            peer.stats.tx_frames += 1
            peer.stats.tx_bytes += len(frame)
            peer.last_tx = now
            return True
        self.drops.queue_full += 1
        return False

    # --- inbound ----------------------------------------------------------------------------
    def on_udp(self) -> None:
        recv = self.udp.recv_into
        buf = self._buf
        view = self._view
        handle = self._datagram
        try:
            for _ in range(UDP_CALLS):
                try:
                    nbytes, seg, addr = recv(buf)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:  # e.g. ECONNREFUSED reported from an earlier send
                    log.debug("UDP receive error: %s", exc)
                    continue
                now = self.clock()
                if seg >= nbytes:
                    handle(bytes(view[:nbytes]), addr, now)
                else:  # a GRO batch: a run of CHUNK pieces first goes the short way (chunks.py)
                    start = self.chunks.on_batch(view, nbytes, seg, addr, now) if buf[0] == _CHUNK else 0
                    for off in range(start, nbytes, seg):
                        handle(bytes(view[off:min(off + seg, nbytes)]), addr, now)
        finally:
            if self.writer is not None:
                self.writer.flush()
            self.chunks.tick()

    def _datagram(self, datagram: bytes, addr: tuple, now: float) -> None:
        try:
            header = parse_header(datagram)
        except FrameError:
            self.drops.malformed += 1
            return
        session = self.sessions.get(header.receiver_index)
        if session is None or session[1].wiped:
            self.drops.unknown_session += 1
            return
        peer, kp = session
        ftype = header.type
        if ftype == _DATA or ftype == _KEEPALIVE:
            self._end_to_end(peer, kp, header, datagram, addr, now, relayed=False)
        elif ftype == _CHUNK:
            self.chunks.on_piece(peer, kp, header, datagram, addr, now)
        elif ftype == _RELAY:
            on_relay(self, peer, kp, header, datagram, addr, now)
        elif ftype == _RELAYED:
            on_relayed(self, peer, kp, header, datagram, addr, now)
        else:
            self._disco(peer, kp, header, datagram, addr, now, None)

    def _end_to_end(self, peer: Peer, kp: Keypair, header, datagram, addr, now: float, relayed: bool) -> None:
        try:
            plaintext = open_frame(kp.recv, header, datagram)
        except BadTag:
            self.drops.bad_tag += 1
            peer.stats.bad_frames += 1
            return
        counter = header.counter
        if not kp.accept(counter):
            self.drops.replay += 1
            peer.stats.replayed_frames += 1
            return
        self._authenticated(peer, kp, counter, len(datagram), addr, now, relayed)
        if header.type == _DATA:
            version = plaintext[0] >> 4 if plaintext else 0
            if version == 4 and len(plaintext) >= 20:
                src = plaintext[12:16]
            elif version == 6 and len(plaintext) >= 40:
                src = plaintext[8:24]
            else:
                self.drops.malformed += 1
                return
            if self.route(src) is not peer:
                self.drops.spoofed_source += 1
                return
            partial = header.flags & _CSUM_PARTIAL
            writer = self.writer
            admit = None if self.filter is None else self.filter.admit
            if writer is not None:
                # written at the end of the drain (flush); the policy is asked once per run
                if not writer.add(plaintext, partial, admit):
                    self._denied(peer)
                return
            if admit is not None and not admit(plaintext):
                self._denied(peer)
                return
            if partial:  # no vnet header to pass NEEDS_CSUM: finish the checksum here
                try:
                    plaintext = finish(plaintext)
                except OffloadError:
                    self.drops.malformed += 1
                    return
            try:
                os.write(self.tun_fd, plaintext)
            except BlockingIOError:
                self.drops.queue_full += 1
            except OSError as exc:
                log.debug("TUN write failed: %s", exc)
                self.drops.malformed += 1
            return
        # KEEPALIVE
        if header.flags & _CHUNK_CONTROL:
            self.chunks.on_control(peer, kp, plaintext, now)
            return
        try:
            echo = parse_echo(plaintext)
        except FrameError:
            self.drops.malformed += 1
            return
        if echo is not None:
            sent_ts, held_ms = echo
            mine = peer.echo_sent
            if mine is not None and mine[0] == sent_ts:
                # our own send time at full clock resolution (the header carries whole ms)
                rtt = (now - mine[1]) * 1000 - held_ms
            else:
                rtt = float(ts_diff(ts_ms(now), sent_ts) - held_ms)
            if 0 <= rtt < 600_000:
                peer.stats.rtt_ms = round(rtt, 3)
        if header.flags & _ECHO_REQUEST:
            self.send_keepalive(peer, (header.timestamp, now))

    def _denied(self, peer: Peer) -> None:
        """A packet of `peer` the access policy refused (step 9)."""
        self.drops.policy += 1
        peer.stats.denied_frames += 1

    def _authenticated(self, peer: Peer, kp: Keypair, counter: int, size: int, addr, now: float,
                       relayed: bool) -> None:
        if kp is peer.ring.next:
            peer.ring.received(kp)
        tracker = peer.stats.trackers.get(kp.local_index)
        if tracker is not None:
            tracker.seen(counter)
        if size:  # relay envelopes (size 0) are counted as relayed_frames, not as received
            st = peer.stats
            st.rx_frames += 1
            st.rx_bytes += size
        peer.last_rx = now
        if not relayed and peer.data_hub is None and addr != peer.endpoint:
            if peer.endpoint is not None:
                log.info("peer %s roamed %s -> %s", peer.config.name, endpoint_text(peer.endpoint),
                         endpoint_text(addr), extra={"event": "peer.roamed", "peer_id": peer.config.peer_id})
            peer.endpoint = addr

    # --- path discovery (PROBE, PROBE_ACK, CALL) ------------------------------------------------
    def _disco(self, peer: Peer, kp: Keypair, header, datagram, addr, now: float, hub: Peer | None) -> None:
        """A path-discovery frame from `peer` (through `hub`, or directly from `addr`): the disco
        keys' tag, then their replay window, then `on_disco`. Nothing here is ever answered before
        both checks passed."""
        keys = kp.disco
        if keys.recv is None:
            self.drops.unknown_session += 1
            return
        try:
            payload = open_frame(keys.recv, header, datagram)
        except BadTag:
            self.drops.bad_tag += 1
            peer.stats.bad_frames += 1
            return
        if not keys.accept(header.counter):
            self.drops.replay += 1
            peer.stats.replayed_frames += 1
            return
        if kp is peer.ring.next:
            peer.ring.received(kp)
        handler = self.on_disco
        if handler is None:
            self.drops.malformed += 1
            return
        handler(peer, header.type, payload, addr, hub, now)

    def send_disco(self, peer: Peer, ftype: int, payload: bytes, *, dest: tuple | None = None,
                   via: Peer | None = None) -> int:
        """Seal a PROBE, PROBE_ACK or CALL for `peer` under its disco keys and send it to `dest`
        directly, or through the hub `via`. The size sent, 0 if it could not leave."""
        now = self.clock()
        kp = peer.ring.sending(now)
        hkp = None if via is None else via.ring.sending(now)
        target = dest if via is None else via.endpoint
        if kp is None or target is None or (via is not None and hkp is None):
            return 0
        ts = ts_ms(now)
        try:
            frame = seal(kp.disco.send, ftype, kp.remote_index, kp.disco.next_counter(), ts, payload)
            if hkp is not None:
                frame = wrap_relay(hkp.send, _RELAY, hkp.remote_index, hkp.next_counter(), ts, peer.id_bytes,
                                   frame)
        except (NonceExhausted, FrameError):
            return 0
        if self.udp.sendto(frame, target):
            return len(frame)
        self.drops.queue_full += 1
        return 0
