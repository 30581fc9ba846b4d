"""Who answers where: the verified node records a node has seen, reduced to what checking a DHT
contact needs. Pure (`now` is an argument).

A contact (peer id, address) is VERIFIED when we hold a valid, CA-chained node record of that peer
id that lists the address among its endpoint candidates (ip and control port: the DHT answers on
the control port). The record is signed by the node, so the address is the node's own claim and
a third party cannot attach a peer id to an address of its choosing. Addresses come only from
records; nobody's word about someone else's address is believed.

Bounded: at most `max_entries` identities, the least recently used forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .records import NodeRecord

__all__ = ["Identities", "Identity"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Identity:
    peer_id: bytes
    addresses: tuple[Address, ...]  # (ip, control port) of each candidate, in the record's order
    expires: float  # the record's expiry or the certificate's end, whichever comes first
    rank: tuple[int, int]
    public: bool


class Identities:
    def __init__(self, max_entries: int = 8192) -> None:
        self.max_entries = max_entries
        self._by_id: OrderedDict[bytes, Identity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, peer_id: bytes) -> bool:
        return peer_id in self._by_id

    def learn(self, rec: NodeRecord) -> bool:
        """Remember a VALIDATED record. True if it was new or newer than what we held."""
        held = self._by_id.get(rec.node_id)
        if held is not None and held.rank >= rec.rank:
            self._by_id.move_to_end(rec.node_id)
            return False
        addresses = tuple(dict.fromkeys((e.ip, e.control_port) for e in rec.endpoints))
        self._by_id[rec.node_id] = Identity(
            rec.node_id, addresses, min(rec.expires, rec.certificate.not_after), rec.rank, rec.public
        )
        self._by_id.move_to_end(rec.node_id)
        if len(self._by_id) > self.max_entries:
            self._by_id.popitem(last=False)
        return True

    def get(self, peer_id: bytes, now: float) -> Identity | None:
        ident = self._by_id.get(peer_id)
        if ident is None:
            return None
        if now >= ident.expires:
            del self._by_id[peer_id]
            return None
        return ident

    def vouches(self, peer_id: bytes, address: Address, now: float) -> bool:
        """Is `address` one of the endpoints `peer_id` itself signed (and still valid)?"""
        ident = self.get(peer_id, now)
        return ident is not None and tuple(address) in ident.addresses

    def forget(self, peer_id: bytes) -> None:
        self._by_id.pop(peer_id, None)

    def expire(self, now: float) -> int:
        gone = [p for p, i in self._by_id.items() if now >= i.expires]
        for p in gone:
            del self._by_id[p]
        return len(gone)
