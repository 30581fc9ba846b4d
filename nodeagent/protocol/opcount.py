"""Counts of the asymmetric operations the peer handshake performs. Pure.

The handshake (handshake.py) and the trust check (trust.py) bump these around every ML-DSA-87
signature and verification and every ML-KEM-1024 encapsulation and decapsulation they make, so
a test (or `status --json`, node "handshake") can tell exactly what an input cost this node: a
HELLO that claims a peer but was not made by it must cost no signature and no encapsulation
(docs/threat-model.md, attacks 12 and 13).

One process-wide `COUNTS`; handshakes run on worker threads (control/crypto.py), so the
increments take a lock.
"""

from __future__ import annotations

import threading

__all__ = ["COUNTS", "OPERATIONS", "OperationCounts"]

OPERATIONS = ("signatures", "verifications", "encapsulations", "decapsulations")


class OperationCounts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OPERATIONS, 0)

    def bump(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def since(self, before: dict[str, int]) -> dict[str, int]:
        """What was counted after `before` (a snapshot)."""
        now = self.snapshot()
        return {k: now[k] - before.get(k, 0) for k in OPERATIONS}


COUNTS = OperationCounts()
