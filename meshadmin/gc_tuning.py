"""The server process's cyclic garbage collector, set for thousands of long-lived sockets.

CPython runs a collection of its youngest generation every 2,000 net new container objects
(3.13's default threshold), one of the middle generation every tenth of those, and a full one
(every tracked object in the process) once enough survivors have piled up. A server process with
thousands of agent sockets holds hundreds of thousands of long-lived objects (each socket's
protocol, consumer, buffers and tasks), and handing a change to those sockets makes a few dozen
short-lived objects per socket: during a change collections come one after another, and the full
ones walk the whole heap each time. Measured at 10,000 agents on two processes (BENCHMARKS.md,
"The garbage collector"): the collector took about 14 % of a server process's busy CPU during
changes.

`configure(threshold)` does two things, once, when the ASGI application is loaded
(meshadmin/asgi.py):
- `gc.freeze()`: the objects that exist by then (Django, the apps, the URL conf, every imported
  module; they live as long as the process) move to the permanent generation, which no collection
  walks;
- the youngest generation is collected every `threshold` net new objects instead of 2,000; the
  other two generations keep Python's ratios (10 and 10), so they run as much less often.
Reference cycles are still collected, only later: up to `threshold` more objects wait for a
collection. `threshold` is SHADOWMESH_GC_THRESHOLD (default DEFAULT_THRESHOLD); 0 leaves the
collector as Python sets it and freezes nothing.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["DEFAULT_THRESHOLD", "configure"]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 50_000


def configure(threshold: int) -> bool:
    """Freeze what exists and collect the youngest generation every `threshold` new objects;
    0: leave the collector as it is. Returns whether anything was changed."""
    if threshold < 0:
        raise ValueError(f"a collection threshold is >= 0, not {threshold}")
    if threshold == 0:
        return False
    gc.collect()  # start-up's garbage goes now, not into the permanent generation
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)
    log.info("garbage collector: %d objects frozen, thresholds %s", gc.get_freeze_count(),
             gc.get_threshold(), extra={"event": "server.gc_configured"})
    return True
