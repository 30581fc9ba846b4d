"""Relay envelopes as they arrive: a hub forwarding other peers' frames, and a node taking the
frames its hub forwarded to it. The data path's inbound step 4 (datapath.py `DataPath._datagram`)
hands each RELAY and RELAYED datagram here, on the event-loop thread like the rest of the data
path. The node's own frames for a relayed peer are wrapped as RELAY by the data path itself
(datapath.py outbound step 6), inline on its hot path.

RELAY (`on_relay`), we are the hub:
  1. only a hub relays (`is_hub`)                                     drop `malformed`
  2. the hop: the envelope's tag under the sending peer's hop keys    drop `bad_tag`
     (an envelope that does not parse                                 drop `malformed`)
     then the hop keys' replay window, ONLY after the tag verified    drop `replay`
     an authenticated hop is the data path's step 7 for that peer (keys rotated, loss tracking,
     roaming), but not a received frame: a forwarded one counts in the peer's relayed_frames
  3. rate-cap the source peer: its `bucket` (ratelimit.TokenBucket)   `relay.rate_limited`
  4. the destination named inside: a known peer, not the source, with keys to send and a UDP
     endpoint                                                         `relay.no_destination`
  5. re-wrap the inner frame byte for byte as RELAYED for the destination (naming the source)
     and send it; keys that cannot seal                               `relay.no_destination`
     a datagram the socket refused                                    drop `queue_full`
  The inner frame is never opened here: the hub holds no keys of the two peers' session.

RELAYED (`on_relayed`), from our hub:
  1. the hop, as for RELAY, under our hub's keys
  2. the source peer named inside: the inner receiver index must be a live session of that very
     peer                                                             drop `unknown_session`
  3. DATA, KEEPALIVE: the data path's inbound steps 5-10 (`DataPath._end_to_end`) as a frame of
     that peer, relayed (it never moves the peer's endpoint); PROBE, PROBE_ACK, CALL: the data
     path's `_disco`, naming the hub; anything else                   drop `malformed`

What this module uses of the data path (`dp`): `is_hub`, `by_id`, `sessions`, `udp`, `drops`,
`relay` (the RelayStats of `status --json`), `_authenticated`, `_end_to_end` and `_disco`. It
keeps no state of its own: the per-peer rate caps live on the peers (`Peer.bucket`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.frames import (
    END_TO_END_TYPES,
    BadTag,
    FrameError,
    FrameType,
    ts_ms,
    unwrap_relay,
    wrap_relay,
)
from ..protocol.keys import Keypair, NonceExhausted

if TYPE_CHECKING:
    from .datapath import DataPath, Peer

__all__ = ["on_relay", "on_relayed"]

_DATA = int(FrameType.DATA)
_KEEPALIVE = int(FrameType.KEEPALIVE)
_RELAYED = int(FrameType.RELAYED)


def _open_envelope(dp: DataPath, peer: Peer, kp: Keypair, header, datagram, addr, now: float):
    """A RELAY/RELAYED envelope from `peer` on hop keys `kp`: the hop tag, then the replay
    window; (peer id, inner header, inner frame) or None when dropped (counted). The inner
    frame is not opened here."""
    try:
        opened = unwrap_relay(kp.recv, header, datagram)
    except BadTag:
        dp.drops.bad_tag += 1
        peer.stats.bad_frames += 1
        return None
    except FrameError:
        dp.drops.malformed += 1
        return None
    if not kp.accept(header.counter):
        dp.drops.replay += 1
        peer.stats.replayed_frames += 1
        return None
    dp._authenticated(peer, kp, header.counter, 0, addr, now, relayed=False)
    return opened


def on_relay(dp: DataPath, src: Peer, kp: Keypair, header, datagram, addr, now: float) -> None:
    """Hub role: forward a sealed inner frame from `src` to the peer it names."""
    if not dp.is_hub:
        dp.drops.malformed += 1  # relay envelopes are only for public nodes
        return
    opened = _open_envelope(dp, src, kp, header, datagram, addr, now)
    if opened is None:
        return
    dest_id, _inner_header, inner = opened
    if not src.bucket.take(now):
        dp.relay.rate_limited += 1
        return
    dest = dp.by_id.get(dest_id)
    dkp = dest.ring.sending(now) if dest is not None and dest is not src else None
    if dkp is None or dest is None or dest.endpoint is None:
        dp.relay.no_destination += 1
        return
    try:
        out = wrap_relay(dkp.send, _RELAYED, dkp.remote_index, dkp.next_counter(), ts_ms(now),
                         src.id_bytes, inner)
    except (NonceExhausted, FrameError):
        dp.relay.no_destination += 1
        return
    if dp.udp.sendto(out, dest.endpoint):
        dp.relay.forwarded_frames += 1
        dp.relay.forwarded_bytes += len(out)
        src.stats.relayed_frames += 1
    else:
        dp.drops.queue_full += 1


def on_relayed(dp: DataPath, hub: Peer, kp: Keypair, header, datagram, addr, now: float) -> None:
    """A frame from another peer, forwarded by our hub `hub`."""
    opened = _open_envelope(dp, hub, kp, header, datagram, addr, now)
    if opened is None:
        return
    src_id, inner_header, inner = opened
    src = dp.by_id.get(src_id)
    session = dp.sessions.get(inner_header.receiver_index)
    if src is None or session is None or session[0] is not src or session[1].wiped:
        dp.drops.unknown_session += 1
        return
    itype = inner_header.type
    if itype == _DATA or itype == _KEEPALIVE:
        dp._end_to_end(src, session[1], inner_header, bytes(inner), addr, now, relayed=True)
    elif itype in END_TO_END_TYPES:
        dp._disco(src, session[1], inner_header, bytes(inner), addr, now, hub)
    else:
        dp.drops.malformed += 1
