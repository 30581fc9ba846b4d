"""One object per event loop: what a server process keeps for all its sockets.

A Daphne process serves every socket from one event loop, so per-process state (the fan-out, the
view cache, the counter buffer, ...) is kept per loop: futures and tasks belong to one loop, and a
test's loop gets its own. The loop is held weakly: a closed, dropped loop takes its objects along.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T]):
    """loop -> its object; `current(make)` is the running loop's, made by `make()` on first use."""

    def current(self, make: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        value = self.get(loop)
        if value is None:
            value = self[loop] = make()
        return value
