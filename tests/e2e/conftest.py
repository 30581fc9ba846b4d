"""Browser tests: a real Daphne serving meshadmin, Debian's Chromium driven by Playwright, and agents
that speak the real websocket protocol through the agent's own code (nodeagent.enroll + ServerLink).

- `server`: a fresh data dir, `migrate`, `createadmin` (its printed password is the one we log in
  with), then `daphne` on 127.0.0.1 and a free port; stopped (by its pid) at the end.
- `browser`: Chromium from /usr/bin/chromium with the flags that keep it off the network.
- `agent_factory`: enroll with a token through /api/enroll and keep a ServerLink running in a
  thread, reporting counters that grow every second; stopped at the end of the test.
Screenshots go to artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not listen on {port} within {timeout} s")


@dataclass
class Server:
    url: str
    username: str
    password: str
    env: dict


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("meshadmin-data")
    env = {
        **os.environ,
        "SHADOWMESH_DATA_DIR": str(data),
        "SHADOWMESH_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SETTINGS_MODULE": "meshadmin.settings",
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("DATABASE_URL", "REDIS_URL", "SHADOWMESH_DEBUG"):
        env.pop(var, None)
    python = sys.executable

    def manage(*args: str) -> str:
        done = subprocess.run([python, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    manage("migrate", "--noinput")
    password = manage("createadmin", "--username", "admin").strip().splitlines()[-1]
    port = _free_port()
    log = open(data / "daphne.log", "wb")  # closed in the teardown
    proc = subprocess.Popen(
        [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "meshadmin.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, proc)
        yield Server(f"http://127.0.0.1:{port}", "admin", password, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "daphne-e2e.log").write_bytes((data / "daphne.log").read_bytes())


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --------------------------------------------------------------------------- simulated agents


@dataclass
class Agent:
    """An enrolled agent running the real ServerLink in its own thread and event loop."""

    name: str
    state_dir: Path
    peer_id: str = ""
    peers: dict[str, str] = field(default_factory=dict)  # peer id -> "direct" or "relay:<id>"
    rate: int = 50_000  # bytes per second each way, per peer
    rtt_ms: float = 8.0
    lost_every: int = 0  # lose one frame in `lost_every` (0 = none)
    endpoint_ip: str = ""  # reported listening address (198.18.0.0/15, never contacted)
    link = None
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task | None = None
    started: float = 0.0
    netmaps: int = 0
    reports: list[float] = field(default_factory=list)  # monotonic time of each stats report

    def stats(self):
        """Totals since start; the byte rate swings +-45 % over time so the shown rates move."""
        from nodeagent.protocol import messages
        from nodeagent.protocol.counters import PeerCounters

        up = time.monotonic() - self.started
        self.reports.append(time.monotonic())
        moved = self.rate * (up + 0.45 * math.sin(up))  # derivative rate*(1+0.45cos) > 0: monotonic
        peers = []
        for peer_id, path in sorted(self.peers.items()):
            frames = int(moved / 1000)
            lost = frames // self.lost_every if self.lost_every else 0
            peers.append(PeerCounters(
                peer_id=peer_id, path=path, rtt_ms=self.rtt_ms + (int(up) % 3),
                tx_frames=frames, rx_frames=frames - lost, tx_bytes=int(moved),
                rx_bytes=int(moved * 0.8), lost_frames=lost, last_handshake_s=float(int(up) % 120),
            ))
        return messages.Stats(round(up, 3), tuple(peers))

    def _on_netmap(self, netmap) -> None:
        self.netmaps += 1

    def start(self) -> None:
        from nodeagent.protocol import netmap as nm
        from nodeagent.server_link import ServerLink

        self.started = time.monotonic()
        ready = threading.Event()

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            endpoints = (nm.Endpoint(self.endpoint_ip, 8443, 9443),) if self.endpoint_ip else ()
            self.link = ServerLink(self.state_dir, self._on_netmap, self.stats, endpoints=endpoints,
                                   stats_interval=1.0)
            self.task = self.loop.create_task(self.link.run())
            ready.set()
            try:
                self.loop.run_until_complete(self.task)
            except (asyncio.CancelledError, Exception):
                pass
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=main, name=f"agent-{self.name}", daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def revoked(self) -> bool:
        return bool(self.link and self.link.revoked)

    def stop(self) -> None:
        if self.loop is not None and self.task is not None and not self.task.done():
            self.loop.call_soon_threadsafe(self.task.cancel)
        if self.thread is not None:
            self.thread.join(10)


def _parse_enroll_command(command: str) -> dict:
    """`shadowmesh-agent enroll --server URL --token T --name N --state-dir D [--public]` -> dict."""
    words = shlex.split(command)
    assert words[:2] == ["shadowmesh-agent", "enroll"], command
    args: dict[str, str | bool] = {}
    rest = words[2:]
    while rest:
        key = rest.pop(0)
        assert key.startswith("--"), command
        if key == "--public":
            args["public"] = True
        else:
            args[key.removeprefix("--").replace("-", "_")] = rest.pop(0)
    return args


@pytest.fixture
def parse_enroll_command():
    """parse_enroll_command(command) -> {"server", "token", "name", "state_dir"}."""
    return _parse_enroll_command


@pytest.fixture
def agent_factory(tmp_path):
    """agent_factory(command, name, public=False) -> Agent: enrolled (real /api/enroll), link running."""
    from nodeagent.enroll import enroll

    agents: list[Agent] = []

    def make(command: str, name: str, public: bool = False) -> Agent:
        args = _parse_enroll_command(command)
        state_dir = tmp_path / f"agent-{len(agents)}"
        result = enroll(args["server"], args["token"], name, state_dir, public=public)
        agent = Agent(name=name, state_dir=state_dir, peer_id=result.peer_id,
                      endpoint_ip=f"198.18.0.{len(agents) + 10}")
        agents.append(agent)
        return agent

    try:
        yield make
    finally:
        for agent in agents:
            agent.stop()
