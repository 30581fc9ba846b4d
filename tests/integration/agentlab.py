"""Agents in the namespace lab (lab/ at the project root), for the integration tests (root only).

The `lab` fixture (conftest.py) hands out an AgentLab: a `lab.Lab` (namespaces, links, NAT boxes,
processes, all removed at teardown, also when the test fails) that also makes node keys and starts
serverless agents in its namespaces.

    ns = lab.netns("uk")                       -> Netns ("<prefix>-uk")
    sw = lab.switch("sw1"); sw.join(ns, "198.18.1.1/24")   one L2 segment (a bridge in its own namespace)
    lab.keygen(node_name)                      -> (key dir, peer id)
    lab.start_agent(ns, config_path)           -> Agent (its process and log)
    lab.tool(ns, "ping", ...)                  -> runs lab/nettools.py inside ns
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab import Lab, Netns, sh, stop

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


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
        return None if self.proc is None else stop(self.proc, sig, timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class AgentLab(Lab):
    def __init__(self, tmp: Path) -> None:
        super().__init__()
        self.tmp = tmp
        self.agents: list[Agent] = []
        self._logs = 0

    def keygen(self, name: str) -> tuple[Path, str]:
        out = sh(PYTHON, "-m", "nodeagent", "keygen", "--out", str(self.tmp / name))
        return self.tmp / name, out.stdout.strip().splitlines()[-1]

    def start_agent(self, ns: Netns, config: Path, wait_socket: bool = True,
                    args: tuple[str, ...] = ()) -> Agent:
        """`args`: more options for `up` (--metrics-listen, --log-format)."""
        self._logs += 1
        log = self.tmp / f"{config.stem}.{self._logs}.log"
        agent = next((a for a in self.agents if a.config == config), None)
        if agent is None:
            agent = Agent(ns, config, log)
            self.agents.append(agent)
        agent.log = log
        agent.proc = self.spawn(ns, PYTHON, "-m", "nodeagent", "up", "--config", str(config), "-v", *args,
                                log=log, cwd=ROOT)
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


def two_nodes(lab: AgentLab, node_extra: dict | None = None, start: bool = True, args: tuple[str, ...] = ()):
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
    agents = (lab.start_agent(a_ns, a_cfg, args=args), lab.start_agent(b_ns, b_cfg, args=args)) if start \
        else (None, None)
    return a_ns, b_ns, a_id, b_id, a_cfg, b_cfg, agents
