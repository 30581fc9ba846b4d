"""Real server processes for the live tests: Daphne (and a Celery worker) on loopback ports."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from nodeagent.protocol import netmap as nm

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
    """One Daphne; `env` overrides the environment (without DATABASE_URL/REDIS_URL: embedded mode)."""

    def __init__(self, tmp: Path, env: dict | None = None, migrate: bool = True, name: str = "daphne"):
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(SHADOWMESH_DATA_DIR=str(tmp / "data"), SHADOWMESH_NETMAP_DEBOUNCE_S="0.1",
                        DJANGO_SETTINGS_MODULE="meshadmin.settings")
        self.env.update(env or {})
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        if migrate:
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


async def until(predicate, what: str, timeout: float = 20.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def peer_names(maps: list[nm.NetMap]) -> set[str]:
    return {p.name for p in maps[-1].peers} if maps else set()


class Worker:
    """A Celery worker (solo pool) with the same environment as a Server."""

    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PY, "-m", "celery", "-A", "meshadmin.celery:app", "worker", "--pool=solo", "--loglevel=INFO",
                 "--without-heartbeat", "--without-mingle", "--without-gossip"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
