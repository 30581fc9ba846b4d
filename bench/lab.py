"""Two network namespaces joined by a veth pair, and every process started inside them.

Contract:
- Names are unique per run (`smb` + 6 random hex chars + `a`/`b`), so runs never collide with each
  other or with the test suite. Underlay addresses come from 198.19.0.0/16 (inside 198.18.0.0/15).
- Nothing is added to the host namespace: the veth ends are created directly inside the namespaces.
- `Lab` is a context manager. Leaving it (normally, on an exception, on Ctrl-C or SIGTERM) kills every
  process living in the two namespaces by PID (all of them were started by this run, because the
  namespaces are new), deletes both namespaces (which deletes the veth pair and any TUN devices in
  them) and removes files registered with `remove_on_exit` (wireguard-go's control sockets).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class LabError(RuntimeError):
    """The namespaces or a command inside them could not be set up."""


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Node:
    ns: str
    underlay_ip: str
    veth: str


@dataclass
class Lab:
    work: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    a: Node = field(init=False)
    b: Node = field(init=False)
    _files: list[Path] = field(default_factory=list, init=False)
    _procs: list[subprocess.Popen] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        subnet = int(self.tag[:2], 16)  # 198.19.<0..255>.0/24, varied per run
        self.a = Node(f"smb{self.tag}a", f"198.19.{subnet}.1", f"smb{self.tag}a")
        self.b = Node(f"smb{self.tag}b", f"198.19.{subnet}.2", f"smb{self.tag}b")

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Lab:
        # Explicit handlers: a shell that starts us in the background sets SIGINT to "ignore".
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_exit)
        signal.signal(signal.SIGHUP, _raise_exit)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create(self) -> None:
        a, b = self.a, self.b
        sh("ip", "netns", "add", a.ns)
        sh("ip", "netns", "add", b.ns)
        sh("ip", "link", "add", a.veth, "netns", a.ns, "type", "veth", "peer", "name", b.veth, "netns", b.ns)
        for node in (a, b):
            sh("ip", "-n", node.ns, "addr", "add", f"{node.underlay_ip}/24", "dev", node.veth)
            sh("ip", "-n", node.ns, "link", "set", "lo", "up")
            sh("ip", "-n", node.ns, "link", "set", node.veth, "up")

    def close(self) -> None:
        """Kill everything inside our namespaces, delete them, remove registered files. Idempotent."""
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            self.kill(self.pids())
            for p in self._procs:
                with contextlib.suppress(Exception):
                    p.wait(timeout=0.1)
            for node in (self.a, self.b):
                sh("ip", "netns", "del", node.ns, check=False)
            for f in self._files:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        finally:
            signal.signal(signal.SIGINT, old)

    # ------------------------------------------------------------------ processes
    def exec_argv(self, node: Node, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", node.ns, *argv]

    def run(
        self, node: Node, *argv: str, timeout: float = 60, check: bool = False, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self.exec_argv(node, *argv), capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and proc.returncode != 0:
            raise LabError(f"[{node.ns}] {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def spawn(self, node: Node, *argv: str, log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start a long-lived process in `node`'s namespace; stdout+stderr go to `log`."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                self.exec_argv(node, *argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def pids(self, node: Node | None = None) -> list[int]:
        """PIDs of all processes living in our namespaces (or in one of them)."""
        out: list[int] = []
        for n in (node,) if node else (self.a, self.b):
            proc = sh("ip", "netns", "pids", n.ns, check=False)
            out += [int(x) for x in proc.stdout.split() if x.isdigit()]
        return sorted(set(out))

    @staticmethod
    def kill(pids: list[int], grace: float = 3.0) -> None:
        """SIGTERM the given PIDs, then SIGKILL whatever is still alive after `grace` seconds."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop_tunnel(self, keep: tuple[str, ...] = ("iperf3",)) -> None:
        """Kill every process in the namespaces except those named in `keep` (the iperf3 server)."""
        victims = [p for p in self.pids() if comm(p) not in keep]
        self.kill(victims)
        time.sleep(0.3)

    def remove_on_exit(self, path: Path) -> None:
        self._files.append(path)


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _raise_exit(signum, _frame) -> None:
    raise SystemExit(128 + signum)
