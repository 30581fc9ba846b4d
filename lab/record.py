"""The cleanup record: what a lab created, written down before it exists, and how it is undone.

A record is one JSON file:

    {"owner": [pid, start time], "prefix": "sm1a2b3c",
     "netns": [...], "links": [...], "pids": [[pid, start time], ...], "files": [...], "dirs": [...]}

`undo()` removes everything a record lists: processes end (SIGTERM, then SIGKILL), every process
still living in a listed namespace is killed, the namespaces are deleted (which deletes their
veths, bridges, TUN devices and nft tables), then the listed host links and files, and last the
listed directories, if they are empty (a namespace's /etc/netns/<name>). Entries that
are already gone are skipped, so undo can run twice. A lab's teardown and the sweep after a killed
run use this same function.

`sweep()` undoes the records whose owner process is gone and leaves the others alone: a record of a
run still in progress (another test session, a running demo) is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from lab import netns, procs
from lab.cmd import sh

RECORDS = Path("/run/shadowmesh-lab")  # tmpfs: it goes at reboot, as the namespaces do
KINDS = ("netns", "links", "pids", "files", "dirs")


class Record:
    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        me = os.getpid()
        self.data: dict = {"owner": [me, procs.start_time(me)], "prefix": prefix, **{k: [] for k in KINDS}}

    def add(self, kind: str, entry) -> None:
        """Write `entry` down (before the caller creates it)."""
        self.data[kind].append(entry)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)

    def forget(self, kind: str, entry) -> None:
        """Strike `entry` out again (its creation failed: the name may belong to someone else)."""
        self.data[kind].remove(entry)
        self._write()

    def undo(self, grace: float = 5.0) -> None:
        undo(self.data, grace)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def undo(data: dict, grace: float = 5.0) -> None:
    """Remove everything `data` lists (see the module docstring). Idempotent."""
    names = [n for n in data.get("netns", []) if n in netns.existing()]
    spaces = [netns.Netns(n) for n in names]
    ours = [pid for pid, started in data.get("pids", []) if procs.same(pid, started)]
    procs.end(sorted(set(ours) | {p for ns in spaces for p in ns.pids()}), grace)
    for ns in reversed(spaces):
        for _ in range(50):  # whatever was born meanwhile dies too: a namespace outlives its last process
            left = ns.pids()
            if not left:
                break
            procs.end(left, grace=0)
            time.sleep(0.05)
        netns.delete(ns.name)
    for link in reversed(data.get("links", [])):  # host links; gone already if their peer's namespace is
        sh("ip", "link", "del", link, check=False)
    for f in data.get("files", []):
        with contextlib.suppress(FileNotFoundError):
            Path(f).unlink()
    for d in reversed(data.get("dirs", [])):
        with contextlib.suppress(FileNotFoundError, OSError):
            Path(d).rmdir()  # only when empty: whatever else is there is not ours


def owner_alive(data: dict) -> bool:
    owner = data.get("owner")
    return bool(owner) and procs.same(owner[0], owner[1])


def sweep(where: Path = RECORDS) -> list[str]:
    """Undo every record at `where` (one file, or a folder of them) whose owner is gone.
    Returns one line per record: what was removed, or why it was left alone."""
    files = sorted(where.glob("*.json")) if where.is_dir() else [where] if where.exists() else []
    report = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            report.append(f"{f}: unreadable ({e}); left alone")
            continue
        if owner_alive(data):
            report.append(f"{f}: its run (pid {data['owner'][0]}) is still going; left alone")
            continue
        undo(data)
        f.unlink()
        what = ", ".join(f"{len(data.get(k, []))} {k}" for k in KINDS)
        report.append(f"{f}: removed {what}")
    return report
