"""Many sockets' database work in one hop to the database thread: how a login storm is served.

A server process does its database work on one thread (Channels' `database_sync_to_async`), and a
login takes two hops to it: the signature check, then the presence count and the network's
serial. Under a reconnect storm (every agent of a restarted server at once) each hop queued behind
every other socket's, so a socket's second hop waited behind the first hops of all sockets that
came after it: measured at 10,000 agents, half the logins waited over 20 s per hop, and almost no
login finished in the first 30-40 s after the servers listened (BENCHMARKS.md, "The login storm
after a restart").

A `Batch` gathers what sockets submit while its previous hop runs and does all of it in its next
hop: the checks of a hop are one query, the presence counts one job. When nothing is queued a
submission goes at once, alone, so a quiet server answers as before. One `Batch` of each kind per
event loop (per server process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from channels.db import database_sync_to_async

from .per_loop import PerLoop

__all__ = ["LIMIT", "Batch", "per_loop"]

T = TypeVar("T")
R = TypeVar("R")

LIMIT = 256  # tuning: submissions per hop (one query's IN list for the checks)


class Batch(Generic[T, R]):
    """`await batch(item)` -> the result `run_many` gave for it, or raises the exception it gave.

    `run_many(items)` runs on the database thread and returns one result per item, in order; an
    item's result may be an exception (raised to that item's caller only). If `run_many` itself
    raises, every item of that hop gets the exception."""

    def __init__(self, run_many: Callable[[list[T]], Sequence[R | BaseException]],
                 limit: int = LIMIT) -> None:
        self.run_many, self.limit = run_many, limit
        self.pending: list[tuple[T, asyncio.Future[R]]] = []
        self.running: asyncio.Task[None] | None = None
        self.hops = 0  # for tests and curiosity: hops made so far

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.running is None:
            self.running = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        hop: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self.pending:
                hop, self.pending = self.pending[:self.limit], self.pending[self.limit:]
                items = [item for item, _ in hop]
                self.hops += 1
                try:
                    results: Sequence[R | BaseException] = await database_sync_to_async(self.run_many)(items)
                    if len(results) != len(items):
                        raise RuntimeError(f"{len(results)} results for {len(items)} items")
                except Exception as exc:  # each caller gets it, as if it had gone alone
                    results = [exc] * len(items)
                for (_, future), result in zip(hop, results, strict=True):
                    if future.done():  # its socket went away meanwhile
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                hop = []
        except asyncio.CancelledError:  # the loop is shutting down: nobody waits for ever
            for _, future in hop + self.pending:
                future.cancel()
            self.pending = []
            raise
        finally:
            self.running = None


_batches: PerLoop[dict[str, Batch]] = PerLoop()


def per_loop(name: str, run_many: Callable[[list], Sequence]) -> Batch:
    """This event loop's (this server process's) batch called `name`, made on first use."""
    batches = _batches.current(dict)
    batch = batches.get(name)
    if batch is None:
        batch = batches[name] = Batch(run_many)
    return batch
