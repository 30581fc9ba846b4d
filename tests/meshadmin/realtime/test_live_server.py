"""End to end on loopback: a real Daphne serving meshadmin, real agents' enroll() and ServerLink.

No namespaces or TUN: this checks the control link only — enrollment over HTTP, the signed
websocket login, the full map on connect, deltas after changes made through the server (an
endpoint report, a new enrollment), the persisted map, and reconnection after a server restart.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodeagent.enroll import enroll
from nodeagent.protocol import netmap as nm
from nodeagent.server_link import ServerLink

ROOT = Path(__file__).resolve().parents[3]
PY = sys.executable
DAPHNE = str(Path(PY).parent / "daphne")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("daphne did not start listening")


class Server:
    def __init__(self, tmp: Path):
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(SHADOWMESH_DATA_DIR=str(tmp / "data"), SHADOWMESH_NETMAP_DEBOUNCE_S="0.1",
                        DJANGO_SETTINGS_MODULE="meshadmin.settings")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "daphne.log"
        self.proc: subprocess.Popen | None = None
        self.manage("migrate", "--noinput")

    def manage(self, *args: str) -> str:
        out = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                             capture_output=True, text=True, timeout=120)
        return out.stdout

    def token(self, public: bool = False) -> str:
        return self.manage("createtoken", *(["--public"] if public else [])).strip().splitlines()[-1]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([DAPHNE, "-b", "127.0.0.1", "-p", str(self.port),
                                          "meshadmin.asgi:application"], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def _until(predicate, what: str, timeout: float = 20.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def _peer_names(maps: list[nm.NetMap]) -> set[str]:
    return {p.name for p in maps[-1].peers} if maps else set()


async def test_agents_enroll_get_maps_and_follow_changes_through_a_real_server(server, tmp_path):
    uk_dir, be_dir = tmp_path / "uk", tmp_path / "belgium"
    uk = await asyncio.to_thread(enroll, server.url, server.token(public=True), "uk", uk_dir, None, True)
    await asyncio.to_thread(enroll, server.url, server.token(), "belgium", be_dir)
    maps: dict[str, list[nm.NetMap]] = {"uk": [], "belgium": []}
    uk_link = ServerLink(uk_dir, maps["uk"].append, endpoints=(nm.Endpoint("127.0.0.1", 18443, 19443),),
                         stats_interval=0.5)
    be_link = ServerLink(be_dir, maps["belgium"].append, stats_interval=0.5,
                         sleep=lambda d: asyncio.sleep(min(d, 0.2)))
    tasks = [asyncio.create_task(uk_link.run()), asyncio.create_task(be_link.run())]
    try:
        # 1. full maps on connect, 2. uk's endpoint report reaches belgium as a change
        await _until(lambda: _peer_names(maps["belgium"]) == {"uk"}, "belgium sees uk")

        def uk_endpoint():
            hub = maps["belgium"][-1].peer(uk.peer_id)
            return hub is not None and nm.Endpoint("127.0.0.1", 18443, 19443) in hub.endpoints

        await _until(uk_endpoint, "belgium learns uk's endpoint")
        assert maps["belgium"][-1].relays == (uk.peer_id,)
        # 3. a third node enrolling through the server reaches both running agents
        await asyncio.to_thread(enroll, server.url, server.token(), "mac", tmp_path / "mac")
        await _until(lambda: "mac" in _peer_names(maps["uk"]) and "mac" in _peer_names(maps["belgium"]),
                     "both agents see mac")
        persisted = be_dir / "netmap.json"
        assert stat.S_IMODE(persisted.stat().st_mode) == 0o600
        # 4. the server restarts: agents keep their map, reconnect, and follow the next change
        server.stop()
        await _until(lambda: not be_link.connected.is_set(), "belgium notices the server is gone")
        applied_before = maps["belgium"][-1]
        server.start()
        await _until(lambda: be_link.connected.is_set() and uk_link.connected.is_set(), "both reconnect")
        assert maps["belgium"][-1].serial >= applied_before.serial
        await asyncio.to_thread(enroll, server.url, server.token(), "starlink", tmp_path / "starlink")
        await _until(lambda: "starlink" in _peer_names(maps["belgium"]), "belgium sees starlink")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
