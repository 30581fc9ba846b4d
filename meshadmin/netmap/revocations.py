"""Pure: the network CA's revocation list, the DHT record every netmap carries. No database, no clock.

Agents store the list in their DHT and hand it to each other, so a revocation keeps reaching nodes
while the server is down (docs/dht.md). It is the record of nodeagent/discovery/records.py (type
2), signed with the CA key (the `sign` the caller passes: the key stays with the caller) under the
DHT's context: its issuer is the CA, its sequence the issue time in milliseconds (so lists from two
server processes, or before and after a restart, still order), and it lives LIFETIME_S, the most a
list may (it must outlive an outage).

`revocation_list` re-signs only when it must, so an unchanged list keeps its bytes and the netmaps
and deltas that carry it stay equal: when the revoked ids differ from the held list's, when the
held list is past REISSUE_S of its life (a network without changes for days still hands its
agents a list that outlives a server outage by days), or when there is none. No revoked node, no
list. More revoked ids than one list holds (records.MAX_REVOKED): no list, and the caller says so;
agents still get every revocation in the netmap itself while the server is reachable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from nodeagent.discovery.records import (
    MAX_REVOCATION_LIFETIME_S,
    MAX_REVOKED,
    RecordError,
    RevocationList,
    build_revocation_list,
    parse_record,
)
from nodeagent.protocol.cert import ca_id

__all__ = ["LIFETIME_S", "REISSUE_S", "TooManyRevoked", "revocation_list"]

LIFETIME_S = MAX_REVOCATION_LIFETIME_S  # 7 days
REISSUE_S = 24 * 3600  # a held list this old is signed afresh at the next load


class TooManyRevoked(ValueError):
    """More revoked nodes than one list may name."""


def revocation_list(revoked: Iterable[str], *, sign: Callable[[bytes, bytes], bytes], ca_public_key: bytes,
                    held: bytes | None, now: float) -> bytes | None:
    """The list to carry in the netmaps now: `held` again if it still fits, else a new one."""
    ids = frozenset(revoked)
    if not ids:
        return None
    if len(ids) > MAX_REVOKED:
        raise TooManyRevoked(f"{len(ids)} revoked nodes; a list names at most {MAX_REVOKED}")
    previous = _parse(held)
    if previous is not None and previous.ca_id != ca_id(ca_public_key):
        previous = None  # another CA's (the network's CA was replaced): nothing to reuse or outrank
    if previous is not None and previous.revoked == ids and now - previous.issued < REISSUE_S \
            and now < previous.expires:
        return held
    issued = int(now)
    sequence = int(now * 1000)
    if previous is not None:
        sequence = max(sequence, previous.sequence + 1)  # always newer than the one it replaces
    return build_revocation_list(sign, ca_public_key=ca_public_key, sequence=sequence, issued=issued,
                                 expires=issued + LIFETIME_S, revoked=ids)


def _parse(raw: bytes | None) -> RevocationList | None:
    if raw is None:
        return None
    try:
        rec = parse_record(raw)
    except RecordError:
        return None
    return rec if isinstance(rec, RevocationList) else None
