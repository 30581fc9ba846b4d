"""Per-peer counters: the one type that carries them from the agent to the dashboard. Pure.

`PeerCounters` is one peer's figures as the agent's data path counted them, totals since the
agent started (nodeagent/stats.py keeps the live ones; nodeagent/status.py `peer_counters` is
the one place that turns them into this type). The same object is

  - the counter keys of a `status --json` peer entry (docs/operations.md#status-document),
  - an item of the websocket `stats` report (messages.Stats, docs/protocol.md), and
  - what the server's ingest reads (meshadmin/telemetry/ingest.py).

Its codec is `counters_to_dict` / `counters_from_dict` (strict: strict.py). The keys are the
field names, in field order, and they are the fixed `status --json` names.

`DhtCounters` is the node's DHT in the same way: the fixed keys of the `dht` object of
`status --json`, and the optional `dht` of the `stats` report (the dashboard's node page shows
it); `dht_to_dict` / `dht_from_dict` its codec.

What the counters mean over time is here too, so the ingest and the dashboard cannot disagree:
`difference` is what a link carried between two reports (the sample the server stores), and
`rates` turns carried traffic and its duration into the figures people see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import msgpack

from .identity import PEER_ID_RE
from .strict import U64_MAX, Malformed, StrictMap

__all__ = [
    "MAX_ENCODED_SIZE",
    "TRAFFIC",
    "DhtCounters",
    "PeerCounters",
    "Rates",
    "Traffic",
    "counters_from_dict",
    "counters_to_dict",
    "dht_from_dict",
    "dht_to_dict",
    "difference",
    "rates",
]

MAX_PATH = 46  # "relay:" and a peer id


@dataclass(frozen=True, slots=True)
class PeerCounters:
    """One peer's counters: totals since the agent started, plus the link's state now."""

    peer_id: str
    path: str = "direct"  # "direct" or "relay:<peer id>"
    rtt_ms: float | None = None  # last echo round trip; None until one was measured
    tx_frames: int = 0
    rx_frames: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    lost_frames: int = 0  # gaps in the received counters (frames that never came)
    replayed_frames: int = 0
    bad_frames: int = 0
    last_handshake_s: float | None = None  # seconds since the last completed handshake
    denied_frames: int = 0  # frames whose packet this node's access policy refused


def counters_to_dict(c: PeerCounters) -> dict[str, object]:
    """The plain form: the field names as keys, in field order."""
    return {"peer_id": c.peer_id, "path": c.path, "rtt_ms": c.rtt_ms, "tx_frames": c.tx_frames,
            "rx_frames": c.rx_frames, "tx_bytes": c.tx_bytes, "rx_bytes": c.rx_bytes,
            "lost_frames": c.lost_frames, "replayed_frames": c.replayed_frames,
            "bad_frames": c.bad_frames, "last_handshake_s": c.last_handshake_s,
            "denied_frames": c.denied_frames}


def counters_from_dict(v: object, what: str = "counters") -> PeerCounters:
    """Strict: every key present, no other key, integers 0..2**64-1, numbers finite and >= 0."""
    o = StrictMap(v, what)
    path = o.str("path", MAX_PATH)
    if path != "direct" and not (path.startswith("relay:") and PEER_ID_RE.match(path[6:])):
        raise Malformed(f"{what}.path must be 'direct' or 'relay:<peer id>'")
    c = PeerCounters(peer_id=o.peer_id("peer_id"), path=path, rtt_ms=o.num("rtt_ms", nullable=True),
                     tx_frames=o.int("tx_frames"), rx_frames=o.int("rx_frames"), tx_bytes=o.int("tx_bytes"),
                     rx_bytes=o.int("rx_bytes"), lost_frames=o.int("lost_frames"),
                     replayed_frames=o.int("replayed_frames"), bad_frames=o.int("bad_frames"),
                     last_handshake_s=o.num("last_handshake_s", nullable=True),
                     denied_frames=o.int("denied_frames"))
    o.done()
    return c


def _largest() -> int:
    """The msgpack size of the largest valid entry: the longest path, every number at its widest."""
    n = U64_MAX
    widest = PeerCounters("f" * 40, "relay:" + "f" * 40, 0.5, n, n, n, n, n, n, n, 0.5, n)
    return len(msgpack.packb(counters_to_dict(widest), use_bin_type=True))


MAX_ENCODED_SIZE = _largest()  # bytes: no valid entry is larger (the server bounds frames with it)


@dataclass(frozen=True, slots=True)
class DhtCounters:
    """The node's DHT (docs/dht.md): contacts in its routing table, records it holds for others,
    seconds since it last published its own record (None: not yet), lookups it started, and
    lookups that found nothing."""

    contacts: int = 0
    records: int = 0
    last_publish_s: float | None = None
    lookups: int = 0
    failures: int = 0


def dht_to_dict(d: DhtCounters) -> dict[str, object]:
    return {"contacts": d.contacts, "records": d.records, "last_publish_s": d.last_publish_s,
            "lookups": d.lookups, "failures": d.failures}


def dht_from_dict(v: object, what: str = "dht") -> DhtCounters:
    """Strict, like counters_from_dict."""
    o = StrictMap(v, what)
    d = DhtCounters(contacts=o.int("contacts"), records=o.int("records"),
                    last_publish_s=o.num("last_publish_s", nullable=True), lookups=o.int("lookups"),
                    failures=o.int("failures"))
    o.done()
    return d



# ----------------------------------------------------------------------------- over time

TRAFFIC = ("tx_bytes", "rx_bytes", "tx_frames", "rx_frames", "lost_frames", "denied_frames")


class _Carried(Protocol):  # Traffic, or anything with its fields (the server's stored samples)
    @property
    def tx_bytes(self) -> int: ...
    @property
    def rx_bytes(self) -> int: ...
    @property
    def tx_frames(self) -> int: ...
    @property
    def rx_frames(self) -> int: ...
    @property
    def lost_frames(self) -> int: ...
    @property
    def denied_frames(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Traffic:
    """What a link carried over some interval: the difference of two reports, or a sum of them."""

    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    rx_frames: int = 0
    lost_frames: int = 0
    denied_frames: int = 0

    def __add__(self, other: _Carried) -> Traffic:
        return Traffic(self.tx_bytes + other.tx_bytes, self.rx_bytes + other.rx_bytes,
                       self.tx_frames + other.tx_frames, self.rx_frames + other.rx_frames,
                       self.lost_frames + other.lost_frames, self.denied_frames + other.denied_frames)


def _since(cur: int, prev: int) -> int:
    return cur - prev if cur >= prev else cur  # a smaller total: the agent restarted its counters


def difference(cur: PeerCounters, prev: PeerCounters) -> Traffic:
    """What the link carried between report `prev` and the later report `cur` of the same agent.
    A total smaller than before means the counters restarted: it counts from zero."""
    return Traffic(_since(cur.tx_bytes, prev.tx_bytes), _since(cur.rx_bytes, prev.rx_bytes),
                   _since(cur.tx_frames, prev.tx_frames), _since(cur.rx_frames, prev.rx_frames),
                   _since(cur.lost_frames, prev.lost_frames), _since(cur.denied_frames, prev.denied_frames))


@dataclass(frozen=True, slots=True)
class Rates:
    """Traffic per second over an interval, and the share of expected frames that never came."""

    tx_bytes_per_s: float
    rx_bytes_per_s: float
    tx_frames_per_s: float
    rx_frames_per_s: float
    loss_pct: float  # lost / (received + lost); 0.0 when no frame was expected


def rates(t: _Carried, seconds: float) -> Rates:
    """The figures of traffic `t` carried in `seconds` (a non-positive duration counts as 1 s)."""
    interval = seconds if seconds > 0 else 1.0
    expected = t.rx_frames + t.lost_frames
    return Rates(
        tx_bytes_per_s=round(t.tx_bytes / interval, 1),
        rx_bytes_per_s=round(t.rx_bytes / interval, 1),
        tx_frames_per_s=round(t.tx_frames / interval, 2),
        rx_frames_per_s=round(t.rx_frames / interval, 2),
        loss_pct=round(100.0 * t.lost_frames / expected, 3) if expected else 0.0,
    )
