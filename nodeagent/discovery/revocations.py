"""The revoked identities a node knows. Pure.

The set only grows: it is the union of every valid CA revocation list seen (through the DHT or
from the server) and of the revocations in the server's netmaps. A revocation is by peer id, i.e.
by identity: a later certificate for the same key does not lift it. The newest valid list is kept
(`latest`) so the node can store it in the DHT again while the server is down.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .records import RevocationList

__all__ = ["RevokedSet"]


class RevokedSet:
    """A container of revoked peer ids (40 hex characters); pass it as RecordVerifier's `revoked`."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: set[str] = set(ids)
        self.latest: RevocationList | None = None

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Iterable[str]) -> set[str]:
        """Revoke these ids (e.g. from a netmap); returns the ones that were not revoked yet."""
        new = set(ids) - self._ids
        self._ids |= new
        return new

    def apply_list(self, rec: RevocationList) -> set[str]:
        """Merge a VALIDATED revocation list; returns the newly revoked ids. The list is kept as
        `latest` if its sequence is higher than the one kept."""
        if self.latest is None or rec.sequence > self.latest.sequence:
            self.latest = rec
        return self.add(rec.revoked)
