"""At most once per interval, per process: what lets a server do housekeeping on the side of
ordinary requests (the audit log's pruning, the reaping of ephemeral nodes) without a scheduler."""

from __future__ import annotations

import threading

__all__ = ["AtMostEvery"]


class AtMostEvery:
    """`due(now)` is True the first time, then again only once `interval_s` has passed since the
    last True; thread-safe. `now` is a monotonic clock's reading, given by the caller."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self, now: float) -> bool:
        with self._lock:
            if self._last is not None and now - self._last < self.interval_s:
                return False
            self._last = now
            return True

    def reset(self) -> None:
        """Forget the last time (tests)."""
        with self._lock:
            self._last = None
