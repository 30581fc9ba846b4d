"""Network-namespace lab for the agent's integration tests (root only; marked privileged).

The `lab` fixture (conftest.py) hands out a Lab from this module.

`lab` is a factory fixture. Every name it creates carries a per-run prefix ("sm" + 6 random hex
characters), so runs never collide, and everything is removed in teardown, also when the test
fails: agents are stopped (SIGTERM, then SIGKILL), namespaces are deleted (which deletes their
veths, bridges and TUN devices). Underlay addresses come from 198.18.0.0/15 only.

    ns = lab.netns("uk")                       -> Netns
    lab.segment({ns_a: "198.18.1.1/24", ...})  -> one L2 segment (a bridge in its own namespace)
    lab.keygen(node_name)                      -> (key dir, peer id)
    lab.start_agent(ns, config_path)           -> Agent (a Popen with its stderr log)
    lab.tool(ns, "ping", ...)                  -> runs tests/integration/nettools.py inside ns
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
NETTOOLS = Path(__file__).with_name("nettools.py")


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class Netns:
    name: str

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)


@dataclass
class Agent:
    ns: Netns
    config: Path
    log: Path
    proc: subprocess.Popen | None = None

    def status(self) -> dict:
        out = self.ns.run(PYTHON, "-m", "nodeagent", "status", "--config", str(self.config), "--json",
                          check=False)
        if out.returncode != 0:
            raise RuntimeError(f"status failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout)

    def peer(self, peer_id: str) -> dict:
        return next(p for p in self.status()["peers"] if p["peer_id"] == peer_id)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Lab:
    tmp: Path
    prefix: str = field(default_factory=lambda: "sm" + secrets.token_hex(3))
    namespaces: list[Netns] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    _n: int = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    def netns(self, role: str) -> Netns:
        ns = Netns(f"{self.prefix}-{role}")
        sh("ip", "netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, addr_a: str, b: Netns, addr_b: str) -> tuple[str, str]:
        i = self._next()
        va, vb = f"{self.prefix}v{i}a", f"{self.prefix}v{i}b"
        sh("ip", "link", "add", va, "netns", a.name, "type", "veth", "peer", "name", vb, "netns", b.name)
        for ns, dev, addr in ((a, va, addr_a), (b, vb, addr_b)):
            ns.run("ip", "addr", "add", addr, "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
        return va, vb

    def segment(self, members: dict[Netns, str]) -> dict[Netns, str]:
        """One L2 segment: a bridge in its own namespace, one veth per member. -> member's device."""
        sw = self.netns(f"sw{self._next()}")
        sw.run("ip", "link", "add", "br0", "type", "bridge")
        sw.run("ip", "link", "set", "br0", "up")
        devices = {}
        for ns, addr in members.items():
            i = self._next()
            inner, outer = f"{self.prefix}e{i}", f"{self.prefix}p{i}"
            sh("ip", "link", "add", inner, "netns", ns.name, "type", "veth", "peer", "name", outer,
               "netns", sw.name)
            ns.run("ip", "addr", "add", addr, "dev", inner)
            ns.run("ip", "link", "set", inner, "up")
            sw.run("ip", "link", "set", outer, "master", "br0")
            sw.run("ip", "link", "set", outer, "up")
            devices[ns] = inner
        return devices

    def keygen(self, name: str) -> tuple[Path, str]:
        out = sh(PYTHON, "-m", "nodeagent", "keygen", "--out", str(self.tmp / name))
        return self.tmp / name, out.stdout.strip().splitlines()[-1]

    def start_agent(self, ns: Netns, config: Path, wait_socket: bool = True) -> Agent:
        log = self.tmp / f"{config.stem}.{self._next()}.log"
        agent = next((a for a in self.agents if a.config == config), None)
        if agent is None:
            agent = Agent(ns, config, log)
            self.agents.append(agent)
        agent.log = log
        with log.open("wb") as f:
            agent.proc = ns.popen(PYTHON, "-m", "nodeagent", "up", "--config", str(config), "-v",
                                  stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        if wait_socket:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if agent.proc.poll() is not None:
                    raise RuntimeError(f"agent exited with {agent.proc.returncode}:\n{agent.log_text()}")
                try:
                    agent.status()
                    break
                except RuntimeError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"agent never served status:\n{agent.log_text()}")
        return agent

    def tool(self, ns: Netns, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return ns.run(PYTHON, str(NETTOOLS), *args, check=False, timeout=timeout)

    def tool_bg(self, ns: Netns, *args: str) -> subprocess.Popen:
        p = ns.popen(PYTHON, str(NETTOOLS), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for a in self.agents:
            a.stop()
        for ns in reversed(self.namespaces):
            # anything still running inside (a stray tool) dies with a kill of its pids
            pids = sh("ip", "netns", "pids", ns.name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns.name, check=False)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll until predicate() is truthy; the deadline is a failure condition, not a speed claim."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the agent may still be starting
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last error: {last_exc!r})")


def write_config(path: Path, node: dict, peers: list[dict]) -> Path:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines = ["[node]", *(f"{k} = {value(v)}" for k, v in node.items())]
    for p in peers:
        lines += ["", "[[peer]]", *(f"{k} = {value(v)}" for k, v in p.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def two_nodes(lab: Lab, node_extra: dict | None = None, start: bool = True):
    """a (198.18.0.1, 10.10.10.1) dials b (198.18.0.2, 10.10.10.2) over one veth pair."""
    a_ns, b_ns = lab.netns("a"), lab.netns("b")
    lab.veth(a_ns, "198.18.0.1/24", b_ns, "198.18.0.2/24")
    (_, a_id), (_, b_id) = lab.keygen("a"), lab.keygen("b")
    extra = node_extra or {}
    a_cfg = write_config(lab.tmp / "a.toml",
                         {"private_key": "a/node.key", "overlay_ip": "10.10.10.1/24", "listen_ip": "0.0.0.0",
                          "interface": f"{lab.prefix}t1", "control_socket": str(lab.tmp / "a.sock"), **extra},
                         [{"public_key": "b/node.pub", "overlay_ip": "10.10.10.2", "endpoint": "198.18.0.2",
                           "name": "b"}])
    b_cfg = write_config(lab.tmp / "b.toml",
                         {"private_key": "b/node.key", "overlay_ip": "10.10.10.2/24", "listen_ip": "0.0.0.0",
                          "interface": f"{lab.prefix}t2", "control_socket": str(lab.tmp / "b.sock"), **extra},
                         [{"public_key": "a/node.pub", "overlay_ip": "10.10.10.1", "name": "a"}])
    agents = (lab.start_agent(a_ns, a_cfg), lab.start_agent(b_ns, b_cfg)) if start else (None, None)
    return a_ns, b_ns, a_id, b_id, a_cfg, b_cfg, agents
