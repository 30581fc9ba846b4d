"""What a write changed, and the seam through which the realtime layer hears about it.

Every service write ends with `announce(Change(...))`. The announcement waits for the
transaction to commit (`transaction.on_commit`), then sends the `change_announced` signal with
`change=<Change>`. The realtime layer connects a receiver that queues the netmap push; until it
does, nothing listens and announcing is free. Receivers must be quick (queue a task, do not
compute netmaps inline) and must not raise; an exception in one is logged and swallowed.

Changes merge: a burst of edits to one network can be pushed once (`Change.merge`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.dispatch import Signal

__all__ = ["ALL_NODES", "Change", "announce", "change_announced"]

log = logging.getLogger(__name__)

ALL_NODES = None  # `Change.node_ids is ALL_NODES` means every node of the network is affected

change_announced = Signal()  # sent with change=Change, after commit


@dataclass(frozen=True, slots=True)
class Change:
    network_id: int
    reason: str
    node_ids: frozenset[int] | None = field(default=ALL_NODES)
    serial: int = 0

    def merge(self, other: Change) -> Change:
        if other.network_id != self.network_id:
            raise ValueError("cannot merge changes of different networks")
        nodes = None if self.node_ids is None or other.node_ids is None else self.node_ids | other.node_ids
        reason = self.reason if self.reason == other.reason else f"{self.reason},{other.reason}"
        return Change(self.network_id, reason, nodes, max(self.serial, other.serial))


def _send(change: Change) -> None:
    for receiver, result in change_announced.send_robust(sender=Change, change=change):
        if isinstance(result, Exception):
            log.error("change receiver %r failed for %s", receiver, change.reason, exc_info=result)


def announce(change: Change) -> None:
    """Deliver `change` to listeners once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: _send(change))
