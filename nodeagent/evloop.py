"""The agent's event loop: uvloop when it is installed, else the standard library's asyncio loop.

Why: a ping through the tunnel wakes an agent's loop three to four times (a TUN read, a UDP
datagram, on both nodes); uvloop's `add_reader` dispatch costs less per wake-up than asyncio's
selector loop (BENCHMARKS.md, "Data plane speed"). Everything the agent does runs on both loops;
the tests that drive the agent in-process use asyncio's.

`SHADOWMESH_EVENT_LOOP` chooses: `auto` (default: uvloop if it imports), `asyncio`, `uvloop`
(an error if it is not installed). `choose()` is the pure decision, `selected()` applies it to
the environment (start-up calls it before it opens anything, so a bad value is exit 3), and
`run()` runs a coroutine on the loop selected.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any

__all__ = ["LOOP_ENV", "EventLoopError", "choose", "run", "selected"]

log = logging.getLogger(__name__)

LOOP_ENV = "SHADOWMESH_EVENT_LOOP"
_CHOICES = ("auto", "asyncio", "uvloop")


class EventLoopError(ValueError):
    """SHADOWMESH_EVENT_LOOP names a loop that cannot be used."""


def choose(setting: str | None, uvloop_available: bool) -> str:
    """The loop to run: "uvloop" or "asyncio", from the variable's value (None: unset)."""
    value = (setting or "auto").strip().lower()
    if value not in _CHOICES:
        raise EventLoopError(f"{LOOP_ENV}={setting!r}: expected one of {', '.join(_CHOICES)}")
    if value == "asyncio":
        return "asyncio"
    if value == "uvloop" and not uvloop_available:
        raise EventLoopError(f"{LOOP_ENV}=uvloop but uvloop is not installed (pip install uvloop)")
    return "uvloop" if uvloop_available else "asyncio"


def _uvloop():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def selected() -> str:
    """The loop this process will run ("uvloop" or "asyncio"); raises EventLoopError."""
    return choose(os.environ.get(LOOP_ENV), _uvloop() is not None)


def run(main: Coroutine[Any, Any, None], name: str) -> None:
    """Run `main` to completion on the loop `name` (from `selected()`)."""
    log.info("event loop: %s", name, extra={"event": "agent.event_loop"})
    uvloop = _uvloop() if name == "uvloop" else None
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)
