"""The Lab: one run's namespaces, links, NAT boxes and processes, and their removal.

See the package docstring for the contract; this module only ties the parts together.
"""

from __future__ import annotations

import atexit
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Self

from lab import links, nat, netns, procs, signals
from lab.cmd import LabError
from lab.netns import Netns
from lab.record import RECORDS, Record

NETTOOLS = Path(__file__).with_name("nettools.py")
ETC_NETNS = Path("/etc/netns")  # ip netns exec: /etc/netns/<name>/<file> is mounted over /etc/<file>
IFNAMSIZ = 15  # the longest device name Linux takes
_OPEN: list[Lab] = []


class Lab:
    def __init__(self, record: Path | str | None = None, grace: float = 5.0) -> None:
        self.prefix = "sm" + secrets.token_hex(3)
        self.record = Record(Path(record) if record else RECORDS / f"{self.prefix}.json", self.prefix)
        self.grace = grace
        self.namespaces: list[Netns] = []
        self.procs: list[subprocess.Popen] = []
        self._n = 0
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        signals.arm()
        _OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End every process, delete every namespace, host link and file of this run. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            with signals.held():
                self.record.undo(self.grace)
                for p in self.procs:  # reap them (all are dead by now) and close their pipes
                    if p.poll() is None:
                        p.kill()
                    p.wait()
                    for pipe in (p.stdin, p.stdout, p.stderr):
                        if pipe:
                            pipe.close()
        finally:
            if self in _OPEN:
                _OPEN.remove(self)
                signals.disarm()

    # ------------------------------------------------------------------ names
    def link_name(self, kind: str) -> str:
        """A device name unique to this run: prefix + kind + a counter."""
        self._n += 1
        name = f"{self.prefix}{kind}{self._n}"
        if len(name) > IFNAMSIZ:
            raise LabError(f"device name {name!r} is longer than {IFNAMSIZ} characters")
        return name

    def make(self, kind: str, name: str, create) -> None:
        """Write `name` down in the record, then `create()` it (one command). If that fails, nothing
        was made, and the entry is struck out again: the name may belong to someone else."""
        self.record.add(kind, name)
        try:
            create()
        except LabError:
            self.record.forget(kind, name)
            raise

    # ------------------------------------------------------------------ network
    def netns(self, role: str) -> Netns:
        """A new namespace `<prefix>-<role>` with loopback up."""
        name = f"{self.prefix}-{role}"
        self.make("netns", name, lambda: netns.add(name))
        ns = Netns(name)
        self.namespaces.append(ns)
        links.up(ns, "lo")
        return ns

    def veth(self, a: Netns, addr_a: str, b: Netns, addr_b: str) -> tuple[str, str]:
        """A point-to-point link between two namespaces. -> (device in a, device in b)."""
        n = self.link_name("v")
        dev_a, dev_b = n + "a", n + "b"
        if len(dev_a) > IFNAMSIZ:
            raise LabError(f"device name {dev_a!r} is longer than {IFNAMSIZ} characters")
        links.veth(a, dev_a, b, dev_b)
        links.up(a, dev_a, addr_a)
        links.up(b, dev_b, addr_b)
        return dev_a, dev_b

    def switch(self, role: str) -> links.Segment:
        """An L2 segment: a bridge in a namespace of its own (`<prefix>-<role>`)."""
        ns = self.netns(role)
        links.bridge(ns, "br0")
        links.up(ns, "br0")
        return links.Segment(self, ns, "br0")

    def host_bridge(self, addr: str, role: str = "br") -> links.Segment:
        """An L2 segment whose bridge `<prefix><role>` is in the host namespace with address `addr`
        (for a process on the host, such as the server, that the namespaces must reach)."""
        name = f"{self.prefix}{role}"
        if len(name) > IFNAMSIZ:
            raise LabError(f"device name {name!r} is longer than {IFNAMSIZ} characters")
        self.make("links", name, lambda: links.bridge(None, name))
        links.up(None, name, addr)
        return links.Segment(self, None, name, addr)

    def nat(self, role: str, uplink: links.Segment | nat.NatBox, wan: str, lan: str, kind: str = "easy",
            gateway: str | None = None, bare: bool = False) -> nat.NatBox:
        """A NAT box or firewall (lab/nat.py)."""
        return nat.build(self, role, uplink, wan, lan, kind, gateway, bare)

    def block(self, ns: Netns, *addrs: str) -> None:
        """`ns` neither accepts from nor sends to `addrs`."""
        nat.block(ns, self.prefix, *addrs)

    # ------------------------------------------------------------------ processes
    def spawn(self, ns: Netns | None, *argv: str, log: Path | None = None, env: dict | None = None,
              cwd: Path | str | None = None, **kw) -> subprocess.Popen:
        """A long-lived process in `ns` (None: the host), ended at teardown (lab/procs.py)."""
        proc = procs.spawn(ns, *argv, log=log, env=env, cwd=cwd, **kw)
        self.track(proc)
        return proc

    def track(self, proc: subprocess.Popen) -> None:
        """End `proc` at teardown, and after a killed run by the sweep (for a process started elsewhere,
        e.g. a server in the host namespace)."""
        self.procs.append(proc)
        self.record.add("pids", [proc.pid, procs.start_time(proc.pid)])

    def pids(self, ns: Netns | None = None) -> list[int]:
        """Every process living in our namespaces (or in `ns`)."""
        return sorted({p for n in ([ns] if ns else self.namespaces) for p in n.pids()})

    def end_processes(self, keep: tuple[str, ...] = (), grace: float = 3.0) -> None:
        """End every process in our namespaces except those whose command name is in `keep`."""
        procs.end([p for p in self.pids() if procs.comm(p) not in keep], grace)
        for p in self.procs:
            p.poll()

    def remove_on_exit(self, path: Path) -> None:
        self.record.add("files", str(path))

    def resolv_conf(self, ns: Netns, text: str) -> Path:
        """Give `ns` a resolv.conf of its own: /etc/netns/<name>/resolv.conf, which `ip netns exec`
        mounts over /etc/resolv.conf for every process it starts there, so what they read and
        write is this file and never the host's. Removed (with its directory) at teardown."""
        if not any(n.name == ns.name for n in self.namespaces):
            raise LabError(f"{ns.name} is not a namespace of this lab")
        folder = ETC_NETNS / ns.name
        if not ETC_NETNS.exists():  # ours to remove again, when no one else put anything in it
            self.record.add("dirs", str(ETC_NETNS))
            ETC_NETNS.mkdir(exist_ok=True)
        if not folder.exists():
            self.record.add("dirs", str(folder))
            folder.mkdir()
        path = folder / "resolv.conf"
        self.record.add("files", str(path))
        path.write_text(text)
        return path

    # ------------------------------------------------------------------ small tools (lab/nettools.py)
    def tool(self, ns: Netns, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a nettools command inside `ns` and wait for it (its exit status is not checked)."""
        return ns.run(sys.executable, str(NETTOOLS), *args, check=False, timeout=timeout)

    def tool_bg(self, ns: Netns, *args: str) -> subprocess.Popen:
        """Start a nettools command inside `ns`; its stdin and stdout are text pipes."""
        return self.spawn(ns, sys.executable, str(NETTOOLS), *args, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@atexit.register
def _close_all() -> None:
    """A lab whose `with` exit never ran (a fixture generator never resumed) still cleans up at exit."""
    for lab in reversed(_OPEN[:]):
        try:
            lab.close()
        except KeyboardInterrupt:
            pass
