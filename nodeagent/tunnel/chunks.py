"""Chunk mode at the I/O edge: the data path's hooks around protocol/chunk.py.

Sending (from `DataPath.on_tun`, a TUN read that is a TCP super-packet): if the destination peer
granted chunks on the keypair we send with and is reached directly, the super-packet is sealed
as one CHUNK unit (one counter) and its pieces leave at once in one scatter-gather GSO send (after
what the drain had queued for that endpoint, so the order is kept); with an access
policy its flow is noted first (`track`, the data path's outbound step 3: a flow this node starts
in chunk mode is a flow it started, whose replies and ICMP errors the filter then admits);
otherwise the read takes the per-segment path (tso.split, one DATA frame per segment) as before.

Receiving (`DataPath._datagram`, a CHUNK piece): parse strictly (drop `malformed`), store in the
bounded Reassembler (a piece seen twice: `replay`), and when the unit is complete: the tag (drop
`bad_tag`), the replay window for its counter (drop `replay`), the authenticated bookkeeping of
step 7 (loss tracking, roaming), the super-packet's own checks (drop `malformed`), the source
check of step 8 (drop `spoofed_source`), the access policy of step 9 (drop `policy`, asked once:
a super-packet is one flow), then one GSO write to the TUN (after the TUN writer's
pending run, so the order of packets is kept).

Negotiation (receiver-driven, chunk.py): `tick()` runs at most every TICK_S from the UDP drain;
for each direct peer it feeds the peer's received/lost totals to its LossPolicy and sends the
resulting state in a CHUNK_CONTROL keepalive until the peer acknowledges it. A peer's grant is
remembered with the keypair it came on: after a rekey the grant must be given again.
SHADOWMESH_CHUNKS=0 turns the mode off (never granted, never sent) for A/B runs.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from typing import TYPE_CHECKING

from ..protocol.chunk import (
    CHUNK_SUBHEADER,
    DONE,
    DUPLICATE,
    MAX_PIECES,
    PENDING,
    VNET_SIZE,
    ChunkError,
    LossPolicy,
    Reassembler,
    Signal,
    from_tun,
    open_chunk,
    pack_control,
    pack_super,
    parse_control,
    parse_piece,
    parse_super,
    piece_size_for,
    seal_chunk_iov,
)
from ..protocol.frames import HEADER_SIZE, BadTag, FrameFlags, FrameType, Header, seal, ts_ms
from ..protocol.keys import Keypair, NonceExhausted

if TYPE_CHECKING:
    from .datapath import DataPath, Peer

__all__ = ["ENABLED", "ChunkPath"]

log = logging.getLogger(__name__)

ENABLED = os.environ.get("SHADOWMESH_CHUNKS", "1") != "0"
TICK_S = 0.1  # how often the loss policies are fed and the control frames (re)sent
_KEEPALIVE = int(FrameType.KEEPALIVE)
_CONTROL = int(FrameFlags.CHUNK_CONTROL)
_PIECE_OVERHEAD = HEADER_SIZE + CHUNK_SUBHEADER
_CHUNK = int(FrameType.CHUNK)
_PIECE = struct.Struct("!BBHIQIBB")  # the frame header, index, count
_KNOWN_FLAGS = int(FrameFlags.ECHO_REQUEST | FrameFlags.CSUM_PARTIAL | FrameFlags.CHUNK_CONTROL)


_INDEXES = bytes(range(MAX_PIECES))


@functools.lru_cache(maxsize=256)
def _split(count: int, body: int) -> struct.Struct:
    """Cuts `count` datagrams of a piece header and `body` bytes each into header, body, header,
    body, ... (bytes objects) in one call."""
    return struct.Struct(f"{_PIECE_OVERHEAD}s{body}s" * count)


def _run_headers(first: bytes, index: int, k: int) -> bytearray:
    """The headers of pieces index .. index+k-1 of the chunk whose piece `index` has header
    `first`: the same bytes but the index, counting up."""
    heads = bytearray(first * k)
    heads[HEADER_SIZE::_PIECE_OVERHEAD] = _INDEXES[index:index + k]
    return heads


class _PeerChunks:
    __slots__ = ("granted", "policy", "signal", "signal_kp")

    def __init__(self) -> None:
        self.granted: Keypair | None = None  # the keypair on which the peer asked us for chunks
        self.policy = LossPolicy()
        self.signal = Signal()
        self.signal_kp: Keypair | None = None


class ChunkPath:
    def __init__(self, dp: DataPath, enabled: bool = ENABLED) -> None:
        self.dp = dp
        # receiving needs the vnet TUN (one GSO write); sending needs TSO reads, which only a
        # vnet TUN gives, so both follow the same switch
        self.enabled = enabled and dp.writer is not None
        self.reassembler = Reassembler()
        self.peers: dict[bytes, _PeerChunks] = {}
        self.granted = 0  # peers that currently accept chunks from us
        self.sent = 0  # chunks sealed
        self.received = 0  # chunks opened and written
        self._next_tick = 0.0

    def _state(self, peer: Peer) -> _PeerChunks:
        pc = self.peers.get(peer.id_bytes)
        if pc is None:
            pc = self.peers[peer.id_bytes] = _PeerChunks()
        return pc

    # --- sending ---------------------------------------------------------------------------------
    def try_send(self, frame: bytes, now: float, out: dict, touched: set) -> int:
        """Seal TUN read `frame` as a chunk if it can go as one; the segments it stands for, or 0."""
        if not self.granted:
            return 0
        info = from_tun(frame)
        if info is None:
            return 0
        gso_type, gso_size, hdr_len = info
        dst = frame[26:30] if frame[10] >> 4 == 4 else frame[34:50]
        dp = self.dp
        peer = dp.route(dst)
        if peer is None or peer.data_hub is not None or peer.endpoint is None:
            return 0
        pc = self.peers.get(peer.id_bytes)
        kp = peer.ring.sending(now)
        if pc is None or kp is None or pc.granted is not kp or kp.send is None:
            return 0
        try:
            iov, size, count = seal_chunk_iov(kp.send, kp.remote_index, kp.next_counter(), ts_ms(now),
                                              pack_super(gso_type, gso_size, frame),
                                              piece_size_for(hdr_len, gso_size))
        except NonceExhausted:
            dp.on_handshake_needed(peer)
            return 0  # the per-segment path meets the same limit and counts the drop
        except ChunkError:
            return 0
        if dp.filter is not None:  # outbound step 3: note the flow, once per read (the headers suffice)
            dp.filter.track(frame[VNET_SIZE:VNET_SIZE + hdr_len])
        # sent now, as one scatter-gather list; what this drain queued for the same endpoint
        # before it goes first, so the peer sees the packets in the order they were read
        dest = peer.endpoint
        queued = out.pop(dest, None)
        if queued:
            dp._send({dest: queued})
        failed = dp.udp.send_gso(iov, size, count, dest)
        if failed:
            dp.drops.queue_full += failed
        st = peer.stats
        st.tx_frames += 1
        st.tx_bytes += (count - 1) * size + len(iov[-2]) + len(iov[-1])
        peer.last_tx = now
        touched.add(peer)
        self.sent += 1
        return max(1, (len(frame) - 10 - hdr_len) // gso_size)

    # --- receiving -------------------------------------------------------------------------------
    def on_piece(self, peer: Peer, kp: Keypair, header: Header, datagram: bytes, addr: tuple,
                 now: float) -> None:
        dp = self.dp
        drops = dp.drops
        if not self.enabled:
            drops.malformed += 1  # never granted: a CHUNK here is not from a well-behaved peer
            return
        try:
            index, count, piece = parse_piece(header, datagram)
        except ChunkError:
            drops.malformed += 1
            return
        self._piece(peer, kp, header.receiver_index, header.counter, header.timestamp, index, count, piece,
                    addr, now)

    def on_batch(self, view: memoryview, nbytes: int, seg: int, addr: tuple, now: float) -> int:
        """The CHUNK pieces at the start of a GRO batch (`view[:nbytes]`, datagrams of `seg` bytes,
        the last maybe shorter), without a bytes object, header tuple and dispatch per datagram.
        Every check and counter is the generic path's (parse_header, the session, on_piece), in the
        same order. A piece followed by full-sized datagrams whose headers are its own but for the
        index counting up (all cut by one struct call and compared at once) is
        stored with them as one run (Reassembler.add_run); a run with a duplicate or mismatch in
        it goes piece by piece, counted as each would be. Returns the offset of the first datagram
        that is not a CHUNK: the caller hands that one and the rest to the generic path."""
        dp = self.dp
        drops = dp.drops
        sessions = dp.sessions
        unpack = _PIECE.unpack_from
        add = self._piece
        session: tuple[Peer, Keypair] | None = None  # the last piece's, for receiver index `cached`
        cached = -1
        runs = True  # look for runs of pieces (until one check fails: then per piece, so O(n))
        off = 0
        while off < nbytes:
            end = min(off + seg, nbytes)
            if view[off] != _CHUNK:
                return off
            size = end - off
            if size < HEADER_SIZE + CHUNK_SUBHEADER + 1:
                drops.malformed += 1  # parse_header: shorter than a header, or no piece
                off = end
                continue
            _t, flags, length, receiver, counter, ts, index, count = unpack(view, off)
            if flags & ~_KNOWN_FLAGS or length != size - HEADER_SIZE:
                drops.malformed += 1
                off = end
                continue
            if session is None or receiver != cached or session[1].wiped:
                session = sessions.get(receiver)
                if session is None or session[1].wiped:
                    drops.unknown_session += 1
                    session = None
                    off = end
                    continue
                cached = receiver
            if not self.enabled or flags or not 0 < count <= MAX_PIECES or index >= count:
                drops.malformed += 1  # on_piece: never granted; parse_piece: flags, index, count
                off = end
                continue
            # a run: this piece and the next full-sized datagrams, pieces index+1, index+2, ... of
            # the same chunk (every header byte equal but the index): stored at once
            k = min(count - index, (nbytes - off) // seg) if size == seg and runs else 1
            if k > 1:
                stop = off + k * seg
                fields = _split(k, seg - _PIECE_OVERHEAD).unpack_from(view, off)  # header, body, header, ...
                # once false, the rest of the batch goes piece by piece
                runs = b"".join(fields[0::2]) == _run_headers(fields[0], index, k)
                if runs:
                    run = b"".join(fields[1::2])
                    peer, kp = session
                    result = self.reassembler.add_run(receiver, counter, ts, index, k, count, run, now)
                    if result is not None:
                        self._done(peer, kp, receiver, counter, ts, count, result, addr, now)
                    else:  # a duplicate or mismatch among them: one by one, each counted as it is
                        for o in range(off, stop, seg):
                            add(peer, kp, receiver, counter, ts, view[o + HEADER_SIZE], count,
                                bytes(view[o + _PIECE_OVERHEAD:o + seg]), addr, now)
                    off = stop
                    continue
            piece = bytes(view[off + _PIECE_OVERHEAD:end])
            add(session[0], session[1], receiver, counter, ts, index, count, piece, addr, now)
            off = end
        return off

    def _piece(self, peer: Peer, kp: Keypair, receiver: int, counter: int, timestamp: int, index: int,
               count: int, piece: bytes, addr: tuple, now: float) -> None:
        """One parsed piece: reassembly, then for a complete unit the checks and the TUN write."""
        self._done(peer, kp, receiver, counter, timestamp, count,
                   self.reassembler.add(receiver, counter, timestamp, index, count, piece, now), addr, now)

    def _done(self, peer: Peer, kp: Keypair, receiver: int, counter: int, timestamp: int, count: int,
              result: tuple[int, bytes | None], addr: tuple, now: float) -> None:
        """What the reassembler answered for a piece (or a run of them): for a complete unit the
        checks and the TUN write."""
        status, sealed = result
        if status == PENDING:
            return
        dp = self.dp
        drops = dp.drops
        if status != DONE or sealed is None:
            if status == DUPLICATE:
                drops.replay += 1
                peer.stats.replayed_frames += 1
            else:
                drops.malformed += 1
            return
        aead = kp.recv
        if aead is None:  # wiped while the chunk was on its way
            drops.unknown_session += 1
            return
        try:
            plaintext = open_chunk(aead, receiver, counter, timestamp, count, sealed)
        except BadTag:
            drops.bad_tag += 1
            peer.stats.bad_frames += 1
            return
        if not kp.accept(counter):
            drops.replay += 1
            peer.stats.replayed_frames += 1
            return
        dp._authenticated(peer, kp, counter, len(sealed) + count * _PIECE_OVERHEAD, addr, now, False)
        try:
            sp = parse_super(plaintext)
        except ChunkError:
            drops.malformed += 1
            return
        if dp.route(sp.source) is not peer:
            drops.spoofed_source += 1
            return
        policy = dp.filter  # step 9, as for DATA: a super-packet is one flow, asked once
        if policy is not None and not policy.admit(sp.packet):
            dp._denied(peer)
            return
        writer = dp.writer
        if writer is None:  # not reached: enabled implies a writer
            drops.malformed += 1
            return
        writer.flush()
        try:
            os.writev(dp.tun_fd, (sp.vnet, sp.packet))
            writer.writes += 1
        except BlockingIOError:
            drops.queue_full += 1
            return
        except OSError as exc:
            log.debug("TUN write of a chunk failed: %s", exc)
            drops.malformed += 1
            return
        self.received += 1

    # --- negotiation -----------------------------------------------------------------------------
    def on_control(self, peer: Peer, kp: Keypair, payload: bytes, now: float) -> None:
        """An authenticated CHUNK_CONTROL keepalive from `peer` on keypair `kp`."""
        try:
            state, ack = parse_control(payload)
        except ChunkError:
            self.dp.drops.malformed += 1
            return
        pc = self._state(peer)
        if ack:
            pc.signal.on_ack(state)
            return
        use = state and self.enabled
        was = pc.granted is not None
        pc.granted = kp if use else None
        self.granted += (pc.granted is not None) - was
        if use != was:
            log.info("peer %s: chunk mode %s (the peer asked)", peer.config.name, "on" if use else "off")
        self._send_control(peer, use, True, now)

    def tick(self) -> None:
        """From the end of every UDP drain; does its work at most every TICK_S."""
        dp = self.dp
        now = dp.clock()
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_S
        if not self.enabled:
            return
        self.reassembler.expire(now)
        for peer in dp.peers:
            kp = peer.ring.sending(now)
            if kp is None:
                continue
            pc = self._state(peer)
            st = peer.stats
            before = pc.policy.on
            want = pc.policy.update(now, st.rx_frames, st.lost_frames) and peer.data_hub is None
            if pc.policy.on != before:
                log.info("peer %s: asking for chunk mode %s (lost %d of %d frames so far)", peer.config.name,
                         "on" if pc.policy.on else "off", st.lost_frames, st.rx_frames)
            if pc.signal_kp is not kp:
                pc.signal = Signal()
                pc.signal_kp = kp
            signal = pc.signal
            signal.want = want
            state = signal.due(now)
            if state is not None and self._send_control(peer, state, False, now):
                signal.sent(now)

    def _send_control(self, peer: Peer, state: bool, ack: bool, now: float) -> bool:
        dp = self.dp
        kp = peer.ring.sending(now)
        dest = peer.endpoint
        if kp is None or kp.send is None or dest is None or peer.data_hub is not None:
            return False
        try:
            frame = seal(kp.send, _KEEPALIVE, kp.remote_index, kp.next_counter(), ts_ms(now),
                         pack_control(state, ack), _CONTROL)
        except NonceExhausted:
            return False
        if not dp.udp.sendto(frame, dest):
            dp.drops.queue_full += 1
            return False
        peer.stats.tx_frames += 1
        peer.stats.tx_bytes += len(frame)
        peer.last_tx = now
        return True

    def forget(self, peer: Peer) -> None:
        """The peer's sessions were dropped: its grant goes with them."""
        pc = self.peers.get(peer.id_bytes)
        if pc is not None and pc.granted is not None:
            pc.granted = None
            self.granted -= 1
