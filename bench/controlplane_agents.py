"""N simulated agents on one Daphne: connect time, memory per socket, change -> last agent.

    .venv/bin/python bench/controlplane_agents.py [--agents 100 1000] [--changes 5] [--warmup 1]
        [--client-procs 2] [--daphne-log FILE] [--wal]

Each simulated agent speaks the real protocol (nodeagent.protocol.messages over /ws/agent/): it
answers the server's challenge with an ML-DSA-87 signature (the login bound to the network's CA,
whose fingerprint the enrollment token carries) and receives its full netmap, signed; no TUN.
The agents run in --client-procs processes (one event loop cannot read a thousand sockets at once
without adding its own queueing to the figures); times are wall-clock, compared across processes.
Per N: a fresh embedded server (SQLite, in-memory channel layer) in a temporary data directory,
N nodes enrolled beforehand through the enrollment service, then
  connect     time from opening the socket to holding the full map, per agent (50 at a time)
  memory      Daphne's RSS after all N are connected minus before, divided by N
  change      an admin change made through the server (a new node enrolls over HTTP); time from
              sending the request to each agent holding the delta that lists the new node.
              `delta_signatures`: the distinct signed delta frames the agents got for it, i.e. the
              signatures the server made for that change (it signs each distinct delta once).
              Includes the enrollment itself (its HTTP time is reported too) and the push debounce
              (SHADOWMESH_NETMAP_DEBOUNCE_S, 0.3 s by default). The first --warmup changes after
              the server starts are reported apart ("cold": the server's first enrollment request
              pays one-time start-up costs) and left out of the percentiles.
Prints a table and writes bench/results/controlplane-agents-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import mldsa
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodeagent.protocol import messages  # noqa: E402
from nodeagent.protocol.auth import login_message_for  # noqa: E402
from nodeagent.protocol.constants import CONTEXT_AGENT_AUTH  # noqa: E402
from nodeagent.protocol.enroll_token import parse_token  # noqa: E402
from nodeagent.protocol.identity import peer_id  # noqa: E402

SEED_ENROLL = """
import os
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric import mldsa
from meshadmin.mesh.services.enrollment import enroll
from meshadmin.mesh.services.networks import create_network
from meshadmin.mesh.services.tokens import create_token
seeds = Path(os.environ["BENCH_SEEDS"]).read_bytes()
net = create_network("bench", "10.64.0.0/16")  # a /24 holds only 253 nodes
count = len(seeds) // 32
_, token = create_token(net, uses=count, is_public=True)
for i in range(count):
    key = mldsa.MLDSA87PrivateKey.from_seed_bytes(seeds[32 * i: 32 * i + 32])
    enroll(token=token, name=f"a{i}", public_key=key.public_key().public_bytes_raw(), is_public=(i < 2))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Agent:
    def __init__(self, seed: bytes, ca_fingerprint: bytes):
        self.key = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed)
        self.ca_fingerprint = ca_fingerprint
        self.frame: bytes = b""
        self.peer_id = peer_id(self.key.public_key().public_bytes_raw())
        self.ws = None
        self.serial = 0
        self.waiting_for: str | None = None
        self.got: asyncio.Event = asyncio.Event()
        self.got_at = 0.0

    async def login(self, url: str) -> float:
        t0 = time.perf_counter()
        self.ws = await connect(
            url, max_size=messages.MAX_MESSAGE_SIZE, compression=None, ping_interval=None, open_timeout=60
        )
        challenge = messages.decode_server_message(await self.ws.recv())
        login = login_message_for(self.ca_fingerprint, challenge.nonce)
        signature = self.key.sign(login, CONTEXT_AGENT_AUTH)
        await self.ws.send(messages.encode(messages.Auth(self.peer_id, signature)))
        full = await self.ws.recv()  # the full map: not parsed (the client's CPU is not measured)
        if not isinstance(full, bytes) or len(full) < 16:
            raise RuntimeError("no full netmap")
        return time.perf_counter() - t0

    async def listen(self) -> None:
        async for frame in self.ws:
            msg = messages.decode_server_message(frame)
            if isinstance(msg, messages.Delta) and self.waiting_for is not None:
                if any(p.peer_id == self.waiting_for for p in msg.delta.upsert):
                    self.got_at = time.time()
                    self.frame = frame
                    self.got.set()


async def _client(conn, url: str, seeds: bytes, concurrency: int, fingerprint: bytes) -> None:
    """One client process: log its agents in, then per change report when each got it."""
    agents = [Agent(seeds[i : i + 32], fingerprint) for i in range(0, len(seeds), 32)]
    sem = asyncio.Semaphore(concurrency)
    connect_s: list[float] = []

    async def one(a: Agent):
        async with sem:
            connect_s.append(await a.login(url))

    await asyncio.gather(*(one(a) for a in agents))
    listeners = [asyncio.create_task(a.listen()) for a in agents]
    conn.send(connect_s)
    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd is None:
            break
        for a in agents:
            a.got.clear()
            a.waiting_for = cmd
        conn.send("ready")
        await asyncio.wait_for(asyncio.gather(*(a.got.wait() for a in agents)), 120)
        conn.send(([a.got_at for a in agents], sorted({hashlib.sha256(a.frame).hexdigest() for a in agents})))
    for task in listeners:
        task.cancel()
    for a in agents:
        await a.ws.close()


def _client_main(conn, url: str, seeds: bytes, concurrency: int, fingerprint: bytes) -> None:
    asyncio.run(_client(conn, url, seeds, concurrency, fingerprint))


def _enroll_over_http(base: str, token: str, name: str, public: bytes) -> None:
    body = json.dumps(
        {"token": token, "name": name, "public_key": base64.b64encode(public).decode()}
    ).encode()
    req = urllib.request.Request(
        base + "/api/enroll", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()


async def run_one(n: int, changes: int, log_path: str | None = None, wal: bool = False,
                  warmup: int = 1, client_procs: int = 2) -> dict:
    with tempfile.TemporaryDirectory(prefix="sm-bench-agents-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            SHADOWMESH_DATA_DIR=tmp,
            SHADOWMESH_ENROLL_RATE="0",
            SHADOWMESH_AUTH_RATE="0",
            SHADOWMESH_AGENT_CONNECT_RATE="0",  # every simulated agent connects from 127.0.0.1
            SHADOWMESH_LOG_LEVEL="INFO" if log_path else "WARNING",
            DJANGO_SETTINGS_MODULE="meshadmin.settings",
        )
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        if wal:  # journal_mode=WAL is stored in the database file, so the server inherits it
            import sqlite3

            with sqlite3.connect(Path(tmp) / "db.sqlite3") as db:
                db.execute("PRAGMA journal_mode=WAL")
        seeds = os.urandom(32 * n)
        (Path(tmp) / "seeds").write_bytes(seeds)
        t = time.perf_counter()
        subprocess.run(
            [*manage, "shell", "-c", SEED_ENROLL],
            cwd=ROOT,
            env={**env, "BENCH_SEEDS": f"{tmp}/seeds"},
            check=True,
        )
        enroll_s = time.perf_counter() - t
        token = (
            subprocess.run(
                [*manage, "createtoken", "--network", "bench", "--uses", str(warmup + changes),
                 "--expires", "1h"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        fingerprint = parse_token(token).fingerprint  # the agents' login names the network's CA
        port = _free_port()
        daphne_log = open(log_path or os.devnull, "ab")
        daphne = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "meshadmin.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=daphne_log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws/agent/"
            await asyncio.sleep(1.0)
            rss_before = _rss_kib(daphne.pid)
            ctx = multiprocessing.get_context("spawn")
            procs, pipes = [], []
            per = -(-n // client_procs)
            started = time.perf_counter()
            for k in range(client_procs):
                chunk = seeds[32 * per * k : 32 * per * (k + 1)]
                if not chunk:
                    break
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=_client_main,
                                   args=(theirs, url, chunk, max(1, 50 // client_procs), fingerprint))
                proc.start()
                procs.append(proc)
                pipes.append(ours)
            connect_s = [x for p in pipes for x in await asyncio.to_thread(p.recv)]
            all_connected_s = time.perf_counter() - started
            await asyncio.sleep(1.0)
            rss_after = _rss_kib(daphne.pid)
            change_s: list[list[float]] = []
            signatures: list[int] = []
            http_s: list[float] = []
            for c in range(warmup + changes):
                public = mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw()
                for p in pipes:
                    p.send(peer_id(public))
                for p in pipes:
                    assert await asyncio.to_thread(p.recv) == "ready"
                t0 = time.time()
                await asyncio.to_thread(_enroll_over_http, base, token, f"new{c}", public)
                http_s.append(time.time() - t0)
                replies = [await asyncio.to_thread(p.recv) for p in pipes]
                got = [x for times, _ in replies for x in times]
                change_s.append([g - t0 for g in got])
                signatures.append(len({h for _, frames in replies for h in frames}))
                await asyncio.sleep(0.5)
            for p in pipes:
                p.send(None)
            for proc in procs:
                await asyncio.to_thread(proc.join, 60)
        finally:
            daphne.terminate()
            daphne.wait(20)
            daphne_log.close()
    cold, warm = change_s[:warmup], change_s[warmup:]
    flat = [x for run in warm for x in run]
    return {
        "agents": n,
        "client_procs": client_procs,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "sqlite_wal": wal,
        "enroll_setup_s": round(enroll_s, 1),
        "connect_p50_ms": round(1000 * _pct(connect_s, 0.5), 1),
        "connect_p99_ms": round(1000 * _pct(connect_s, 0.99), 1),
        "all_connected_s": round(all_connected_s, 2),
        "rss_per_socket_kib": round((rss_after - rss_before) / n, 1),
        "rss_after_mib": round(rss_after / 1024, 1),
        "change_p50_ms": round(1000 * _pct(flat, 0.5), 1),
        "change_p99_ms": round(1000 * _pct(flat, 0.99), 1),
        "change_last_ms": [round(1000 * max(run), 1) for run in warm],
        "change_first_ms": [round(1000 * min(run), 1) for run in warm],
        "enroll_http_ms": [round(1000 * x, 1) for x in http_s[warmup:]],
        "cold_change_last_ms": [round(1000 * max(run), 1) for run in cold],
        "cold_enroll_http_ms": [round(1000 * x, 1) for x in http_s[:warmup]],
        "delta_signatures": signatures[warmup:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--changes", type=int, default=5, help="measured changes per N")
    parser.add_argument("--warmup", type=int, default=1, help="changes made first and reported apart")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the agents run in")
    parser.add_argument("--wal", action="store_true", help="put the SQLite database in WAL mode first")
    parser.add_argument("--daphne-log", help="keep the server's log (level INFO) in this file")
    args = parser.parse_args()
    results = []
    for n in args.agents:
        r = asyncio.run(run_one(n, args.changes, args.daphne_log, args.wal, args.warmup, args.client_procs))
        results.append(r)
        print(json.dumps(r), flush=True)
    out = ROOT / "bench" / "results" / f"controlplane-agents-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results}, indent=2) + "\n")
    print(
        f"{'agents':>7} {'connect p50/p99 ms':>19} {'all connected s':>16} {'KiB/socket':>11} "
        f"{'change p50/p99 ms':>18} {'last agent per change ms'} (cold first change)"
    )
    for r in results:
        print(
            f"{r['agents']:>7} {r['connect_p50_ms']:>9}/{r['connect_p99_ms']:<9} "
            f"{r['all_connected_s']:>16} {r['rss_per_socket_kib']:>11} "
            f"{r['change_p50_ms']:>8}/{r['change_p99_ms']:<9} "
            f"{r['change_last_ms']} ({r['cold_change_last_ms']})"
        )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
