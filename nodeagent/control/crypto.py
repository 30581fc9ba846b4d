"""Where the handshake's cryptography runs: two worker threads, off the event loop.

ML-DSA-87 signing (~1 ms) and verification (~0.25 ms) release the GIL inside `cryptography`
(measured: bench/gil.py, BENCHMARKS.md#handshake-cryptography-off-the-event-loop), so on a worker thread
they no longer stall the loop thread that forwards packets; the ML-KEM and X25519 calls hold the
GIL but last 30-150 µs each. Two single-thread pools keep the two kinds of work apart:

- `door`: checking HELLOs that arrive on the control port from unauthenticated connections
  (parse, then at most one certificate and one signature verification). The port's per-source
  limits (control/server.py) decide what gets here; whatever strangers send waits only behind
  other strangers.
- `peers`: everything for an authenticated peer: the rest of the door's handshakes once the
  HELLO verified, rekeys inside links, relayed handshakes, our own dials. A flood at the door
  never queues in front of it.

`run(pool, fn, *args)` awaits `fn(*args)` on that pool. `Inline` runs everything on the calling
thread (tests that drive handshakes by hand).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

__all__ = ["CryptoWorkers", "Inline"]


class CryptoWorkers:
    def __init__(self) -> None:
        self.door = ThreadPoolExecutor(1, thread_name_prefix="sm-hs-door")
        self.peers = ThreadPoolExecutor(1, thread_name_prefix="sm-hs-peers")

    async def run_door(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.door, fn, *args)

    async def run_peers(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.peers, fn, *args)

    def close(self) -> None:
        for pool in (self.door, self.peers):
            pool.shutdown(wait=False, cancel_futures=True)


class Inline:
    """The same interface, on the calling thread."""

    async def run_door(self, fn, *args):
        return fn(*args)

    async def run_peers(self, fn, *args):
        return fn(*args)

    def close(self) -> None:
        pass
