"""Processes of the lab: start one inside a namespace, stop one with a grace period, end many at once.

A process is named by (pid, start time) wherever it is written down, so a pid the kernel has since
given to another process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from lab.netns import Netns


def spawn(ns: Netns | None, *argv: str, log: Path | None = None, env: dict | None = None,
          cwd: Path | str | None = None, **kw) -> subprocess.Popen:
    """Start `argv` inside `ns` (None: the host namespace) in a session of its own, so a Ctrl-C on
    the terminal reaches only our own process, which then stops everything in order. stdout and
    stderr go to `log` (appended) unless the caller passes its own `stdout`/`stderr`."""
    full = ns.argv(*argv) if ns is not None else list(argv)
    kw.setdefault("stdin", subprocess.DEVNULL)
    if log is None:
        return subprocess.Popen(full, env=env, cwd=cwd, start_new_session=True, **kw)
    with open(log, "ab") as out:
        return subprocess.Popen(full, env=env, cwd=cwd, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT, **kw)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10) -> int | None:
    """Send `sig`, wait up to `grace` seconds, then SIGKILL. Returns the exit status (None if it
    was never started)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def end(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM every pid, then SIGKILL those still alive after `grace` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), None if there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if len(fields) > 19 else None


def same(pid: int, started: int | None) -> bool:
    """`pid` is still the process that started at `started`."""
    return started is not None and alive(pid) and start_time(pid) == started


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
