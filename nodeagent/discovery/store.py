"""The record store: what this node holds for others. Pure (`now` is an argument).

Rules:
- `put` validates the record (the `verify` callable: RecordVerifier.verify) and checks that the
  key is one the record may live under (a node record under its peer id or its overlay-IP key, a
  revocation list under its CA's key). Anything else is refused with a reason.
- One record per key: a record replaces the stored one only if its rank is higher (node records:
  newer certificate, then higher sequence; lists: higher sequence). The same bytes again are
  accepted as UNCHANGED (an idempotent republish); another record of the same rank is STALE.
- `get` validates again before answering (a record may have expired, or its node been revoked,
  since it was stored) and forgets what no longer passes.
- Bounded: at most `max_records` keys and `max_bytes` of record bytes, at most
  `max_per_publisher` keys per publisher (a node has two keys; a node whose certificate moved it
  to another overlay IP would hold a third, and its lowest-ranked one goes). When full, a record
  for a key nearer to our id than the farthest stored key evicts that one (keys near us are the
  ones we are responsible for); otherwise it is refused as FULL.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .ids import distance, to_id
from .records import NodeRecord, Record, RecordError

__all__ = ["Put", "PutResult", "RecordStore"]

MAX_RECORDS = 2048
MAX_BYTES = 32 * 1024 * 1024
MAX_PER_PUBLISHER = 2


class Put(enum.Enum):
    STORED = "stored"
    UNCHANGED = "unchanged"
    STALE = "stale"
    INVALID = "invalid"
    WRONG_KEY = "wrong_key"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class PutResult:
    status: Put
    reason: str = ""
    record: Record | None = None

    @property
    def ok(self) -> bool:
        return self.status in (Put.STORED, Put.UNCHANGED)


@dataclass(slots=True)
class _Entry:
    """What is kept per key: the verbatim bytes and the few fields the rules need (a parsed
    record holds copies of its parts, about twice the bytes; `get` parses again, cheaply)."""

    raw: bytes
    rank: tuple[int, int]
    expires: int
    publisher: bytes
    peer_id: str | None  # node records only


class RecordStore:
    def __init__(
        self,
        own_id: bytes,
        verify: Callable[[bytes, float], Record],
        *,
        max_records: int = MAX_RECORDS,
        max_bytes: int = MAX_BYTES,
        max_per_publisher: int = MAX_PER_PUBLISHER,
    ) -> None:
        self.own_id = to_id(own_id)
        self.verify = verify
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_per_publisher = max_per_publisher
        self._entries: dict[bytes, _Entry] = {}
        self._by_publisher: dict[bytes, set[bytes]] = {}
        self.bytes_used = 0
        self.refused: dict[str, int] = {}  # reason -> count

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def keys(self) -> list[bytes]:
        return list(self._entries)

    def put(self, key: bytes, raw: bytes, now: float) -> PutResult:
        try:
            key = to_id(key)
            rec = self.verify(raw, now)
        except (RecordError, ValueError) as exc:
            reason = getattr(exc, "reason", "invalid")
            return self._refuse(Put.INVALID, reason)
        if key not in rec.keys:
            return self._refuse(Put.WRONG_KEY, "wrong_key")
        held = self._entries.get(key)
        if held is not None:
            if held.raw == rec.raw:
                return PutResult(Put.UNCHANGED, record=rec)
            if rec.rank <= held.rank:
                return self._refuse(Put.STALE, "stale")
            self._remove(key)
        size = len(rec.raw)
        if size > self.max_bytes:
            return self._refuse(Put.FULL, "full")
        mine = self._by_publisher.get(rec.publisher, set())
        while len(mine) >= self.max_per_publisher:
            # the lowest-ranked key goes; on a tie an overlay-IP pointer before the peer-id key
            lowest = min(mine, key=lambda k: (self._entries[k].rank, k == rec.publisher))
            if self._entries[lowest].rank >= rec.rank:
                return self._refuse(Put.FULL, "publisher_cap")
            self._remove(lowest)
            mine = self._by_publisher.get(rec.publisher, set())
        while len(self._entries) >= self.max_records or self.bytes_used + size > self.max_bytes:
            farthest = max(self._entries, key=lambda k: distance(k, self.own_id))
            if distance(farthest, self.own_id) <= distance(key, self.own_id):
                return self._refuse(Put.FULL, "full")
            self._remove(farthest)
        raw = rec.raw
        for other in self._by_publisher.get(rec.publisher, ()):
            if self._entries[other].raw == raw:
                raw = self._entries[other].raw  # the same record under its other key: share the bytes
        peer_id = rec.peer_id if isinstance(rec, NodeRecord) else None
        self._entries[key] = _Entry(raw, rec.rank, rec.expires, rec.publisher, peer_id)
        self._by_publisher.setdefault(rec.publisher, set()).add(key)
        self.bytes_used += size
        return PutResult(Put.STORED, record=rec)

    def get(self, key: bytes, now: float) -> Record | None:
        """The record under `key` if it still validates at `now` (else it is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            return self.verify(entry.raw, now)
        except RecordError:
            self._remove(key)
            return None

    def expire(self, now: float) -> int:
        """Drop expired records; returns how many keys went."""
        gone = [k for k, e in self._entries.items() if now >= e.expires]
        for k in gone:
            self._remove(k)
        return len(gone)

    def purge_revoked(self, revoked: set[str] | frozenset[str]) -> int:
        """Drop node records of revoked peer ids at once."""
        gone = [
            k
            for k, e in self._entries.items()
            if e.peer_id is not None and e.peer_id in revoked
        ]
        for k in gone:
            self._remove(k)
        return len(gone)

    def _refuse(self, status: Put, reason: str) -> PutResult:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return PutResult(status, reason)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes_used -= len(entry.raw)
        mine = self._by_publisher.get(entry.publisher)
        if mine is not None:
            mine.discard(key)
            if not mine:
                del self._by_publisher[entry.publisher]
