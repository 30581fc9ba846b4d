"""N simulated agents on the control plane: connect, memory per socket, change -> last agent, restart.

    .venv/bin/python bench/controlplane_agents.py [--agents 100 1000] [--changes 5] [--warmup 1]
        [--client-procs 2] [--daphne-log FILE] [--wal]
        [--backend sqlite|postgres] [--daphnes 1] [--networks 1] [--restart] [--stats-interval 2]
        [--agents-per-address 1] [--watch K] [--change-requests first|spread]
        [--client-gc-threshold 0] [--state DIR]

    # issue 11: 10,000 agents, two Daphnes, PostgreSQL + Redis, 10 networks, a server restart
    nice -n 10 .venv/bin/python bench/controlplane_agents.py --backend postgres --daphnes 2 \\
        --agents 10000 --networks 10 --client-procs 4 --restart [--state DIR]

Each simulated agent speaks the real protocol (nodeagent.protocol.messages over /ws/agent/): it
answers the server's challenge with nodeagent.server_link's own login (ML-DSA-87, bound to the
network's CA), receives its full netmap, signed, acknowledges the maps it gets (`ack`, as the
agent does: 1.5-3 s later, once for what came meanwhile, nodeagent/delayed_ack.py) and sends an
(empty) `stats` report every --stats-interval seconds (2, the agent's own; 0: none) or as often as
its server's `telemetry` asks (it names the feature in `auth`, as the agent does; the intervals
the agents hold after the changes are reported, `stats_intervals_s`). No TUN; the
full map is not parsed past its serial (the client's CPU is shared with the server's and is not
what is measured). When its socket closes it reconnects as nodeagent.server_link.ServerLink does:
`backoff_delay(attempt, random())`, attempt reset by a full map, a 4429 close jumping to
RATE_LIMITED_ATTEMPT.

Every agent connects from its own loopback address (127.16.0.1 and up; all of 127.0.0.0/8 is
loopback on Linux) and the enrollments that make the changes from theirs (127.15.x.y), so the
server's per-address limits (SHADOWMESH_AGENT_CONNECT_RATE, SHADOWMESH_ENROLL_RATE, ...) stay as
they are in production. `--agents-per-address K` puts K agents behind each address instead (agents
behind one NAT, or a proxy the server does not trust: K = --agents puts them all behind one). The
bench raises its RLIMIT_NOFILE soft limit to the hard limit (its children, the servers and the
client processes, inherit it).

The agents run in --client-procs processes (one event loop cannot read thousands of sockets at once
without adding its own queueing to the figures), each on the agent's own event loop (uvloop, as
nodeagent/evloop.py chooses; SHADOWMESH_EVENT_LOOP=asyncio for the standard loop); times are
wall-clock, compared across processes. With --client-gc-threshold N each client process sets its
garbage collector as a server process does (meshadmin/gc_tuning.py): 2,500 agents in one process
make a heap no agent has, and walking it took a fifth of the client processes' CPU. The servers
take SHADOWMESH_GC_THRESHOLD from the environment, as in production.
Per N: a fresh server in a temporary data directory, either embedded (SQLite, in-memory channel
layer; --backend sqlite, one Daphne) or --daphnes Daphne processes on one PostgreSQL and Redis
started for the run by scripts/services.sh (the test suite's own, on free ports); agent i goes to
Daphne i mod D and network i mod K (--networks K; one network's full map of N peers must fit the
protocol's 1 MiB frame, which a full mesh of ~3,400 bare peers reaches), all enrolled beforehand
through the enrollment service. Then
  connect     time from opening the socket to holding the full map, per agent (--in-flight first
              logins at once, 50 by default)
  memory      the Daphnes' RSS after all N are connected minus before, summed, divided by N
  change      an admin change made through the server: one new node enrolls over HTTP in every
              network at once (all through Daphne 0, or with --change-requests spread network j's
              through Daphne j mod D), each request on a thread of its own; time from sending the
              requests to each agent holding the delta that lists its network's new node: change ->
              last agent over all N.
              `delta_signatures`: the distinct signed delta frames the agents got for it, i.e. the
              signatures the servers made for that change (each process signs each distinct
              delta once: at most networks x Daphnes).
              Includes the enrollment itself (its HTTP time, and when the last request of each
              change was sent and answered, are reported too) and, for a network pushed less than
              the push debounce ago (SHADOWMESH_NETMAP_DEBOUNCE_S, 0.3 s by default), the rest of
              it. The first --warmup changes after the server starts are reported apart ("cold")
              and left out of the percentiles. With a reused --state, the nodes earlier runs'
              changes enrolled are deleted (and the change tokens refilled) before the servers
              start: every run measures networks of the agents' own nodes.
  restart     (--restart) every Daphne is stopped (SIGTERM) and started again on its port; per
              agent the time from the stop signal, and from the moment the new servers listen, to
              being logged in again (a full map, or, as the agent names the serial of the map it holds in
              `auth`, the empty delta that says it is current: counted apart as "login answered");
              refusals (close codes, 4429 counted apart) and failed
              attempts (connect errors, timeouts) during the reconnect. Then one more change
              (`after_restart`) through the restarted servers.
1-minute load averages before each phase are recorded (the 2 cores are shared).
Prints a table and writes bench/results/controlplane-agents-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import ctypes
import hashlib
import http.client
import json
import multiprocessing
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives.asymmetric import mldsa
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshadmin import gc_tuning  # noqa: E402
from nodeagent import evloop  # noqa: E402
from nodeagent.delayed_ack import DelayedAck  # noqa: E402
from nodeagent.protocol import messages  # noqa: E402
from nodeagent.protocol.constants import CloseCode  # noqa: E402
from nodeagent.protocol.identity import peer_id  # noqa: E402
from nodeagent.protocol.strict import MessageError  # noqa: E402
from nodeagent.server_link import FEATURES, RATE_LIMITED_ATTEMPT, _login, backoff_delay  # noqa: E402

PR_SET_PDEATHSIG = 1  # linux/prctl.h

NETWORK_IDS = """
import json
from meshadmin.mesh.models import Network
print(json.dumps(dict(Network.objects.values_list("name", "pk"))))
"""

FORGET_CHANGES = """
from django.db.models import F
from meshadmin.mesh.models import EnrollmentToken, Node
Node.objects.filter(name__regex=r"^[nb][0-9]").delete()  # the agents' nodes are a<i>, the changes' n<pid>-...
EnrollmentToken.objects.filter(is_public=False).update(uses_left=F("max_uses"))  # the change tokens
"""

SEED_NETWORKS = """
import json, os
from collections.abc import Callable
from pathlib import Path
from meshadmin.mesh.services.networks import create_network
from meshadmin.mesh.services.tokens import create_token
k, count = int(os.environ["BENCH_NETWORKS"]), int(os.environ["BENCH_AGENTS"])
out = []
for j in range(k):
    net = create_network(f"bench{j}", f"10.{64 + j}.0.0/16")  # a /24 holds only 253 nodes
    out.append({"name": net.name, "ca_public_key": bytes(net.ca_public_key).hex(),
                "token": create_token(net, uses=-(-count // k), is_public=True)[1],
                "change_token": create_token(net, uses=1000, is_public=False)[1]})
Path(os.environ["BENCH_OUT"]).write_text(json.dumps(out))
"""

SEED_ENROLL = """
import json, os
from collections.abc import Callable
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric import mldsa
from meshadmin.mesh.services.enrollment import enroll
from meshadmin.mesh.models import Node
seeds = Path(os.environ["BENCH_SEEDS"]).read_bytes()
nets = json.loads(Path(os.environ["BENCH_OUT"]).read_text())
part, parts = (int(x) for x in os.environ["BENCH_PART"].split("/"))
k = len(nets)
done = set(Node.objects.values_list("name", flat=True))  # an interrupted seeding goes on where it was
from django.db import transaction
mine = [i for i in range(len(seeds) // 32) if (i % k) % parts == part and f"a{i}" not in done]
# one seeder per group of networks (no shared row locks); 200 enrollments per transaction: each is
# still the enrollment service's own (its atomic block becomes a savepoint), but the commits (and
# their flushes) are 50 per 10,000 nodes instead of 10,000
for b in range(0, len(mine), 200):
    with transaction.atomic():
        for i in mine[b: b + 200]:
            key = mldsa.MLDSA87PrivateKey.from_seed_bytes(seeds[32 * i: 32 * i + 32])
            enroll(token=nets[i % k]["token"], name=f"a{i}", public_key=key.public_key().public_bytes_raw(),
                   is_public=(i < 2 * k))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def source_address(i: int) -> str:
    """Agent i's own loopback address: 127.16.0.1, ..., 250 hosts per /24, 62,500 per /16."""
    return f"127.{16 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


def change_address(c: int, j: int) -> str:
    """The address the enrollment of change c in network j comes from."""
    return f"127.15.{c % 250}.{j % 250 + 1}"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _full_serial(frame: bytes) -> int:
    """The serial of a full-map frame, read from the head of its body (network, serial come first)."""
    body = msgpack.unpackb(frame, raw=False)["netmap"]
    head = msgpack.Unpacker(raw=False)
    head.feed(body[:256])
    head.read_map_header()
    head.unpack(), head.unpack(), head.unpack()  # "network", its name, "serial"
    return int(head.unpack())


class Agent:
    def __init__(self, index: int, seed: bytes, ca_public_key: bytes, url: str, network: str,
                 stats_interval: float):
        key = mldsa.MLDSA87PrivateKey.from_seed_bytes(seed)
        pid = peer_id(key.public_key().public_bytes_raw())
        # what nodeagent.server_link._login reads of the enrolled state
        self.state = types.SimpleNamespace(identity=types.SimpleNamespace(private_key=key, peer_id=pid),
                                           ca_public_key=ca_public_key)
        self.src = source_address(index // max(1, int(os.environ.get("BENCH_PER_ADDRESS", "1"))))
        self.url, self.network = url, network
        self.stats_interval = stats_interval
        self.report_interval = stats_interval  # the server's `telemetry` on this connection, else ours
        self.interval_changed = asyncio.Event()
        self.told: collections.Counter[float] = collections.Counter()  # intervals the servers asked for
        self.frame: bytes = b""
        self.waiting_for: str | None = None
        self.got = asyncio.Event()
        self.on_got: Callable[[], None] | None = None  # the client's count of agents still waiting
        self.got_at = 0.0
        self.full_at: list[float] = []  # wall-clock time of every login answered (full map or "current")
        self.serial: int | None = None  # the serial of the map held (named in `auth`, as the agent does)
        self.has_full = asyncio.Event()
        self.first_login_s: float | None = None
        self.attempt = 0
        self.closes: collections.Counter[str] = collections.Counter()  # close codes and errors
        self.logins: collections.Counter[str] = collections.Counter()  # answers: "full map", "current"
        self.stopped = False

    async def run(self) -> None:
        """ServerLink.run's loop: a session, then backoff_delay(attempt, random()) and again."""
        while not self.stopped:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                self.closes[f"close {code}"] += 1
                if code == CloseCode.RATE_LIMITED:
                    self.attempt = max(self.attempt, RATE_LIMITED_ATTEMPT)
            except (OSError, InvalidHandshake, TimeoutError, MessageError) as exc:
                self.closes[type(exc).__name__] += 1
            except Exception as exc:  # anything else: counted, and the agent goes on as the agent does
                self.closes[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            if self.stopped:
                break
            delay = backoff_delay(self.attempt, random.random())
            self.attempt += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        t0 = time.perf_counter()
        # nodeagent.server_link._connect's settings, from our own loopback address
        async with connect(self.url, max_size=messages.MAX_MESSAGE_SIZE, compression=None,
                           ping_interval=20, ping_timeout=20, open_timeout=10, close_timeout=5,
                           local_addr=(self.src, 0)) as ws:
            await _login(ws, self.state, self.serial, FEATURES)
            self.report_interval = self.stats_interval
            logged_in = False
            sender = asyncio.create_task(self._stats(ws)) if self.stats_interval > 0 else None
            # acknowledged as the agent does: later, once for what came meanwhile (delayed_ack.py)
            acks = DelayedAck(lambda serial: ws.send(messages.encode(messages.Ack(serial))), random.random)
            try:
                async for frame in ws:
                    kind = messages.frame_type(frame)
                    if kind == "telemetry":  # as ServerLink: the interval from now on
                        msg = messages.decode_server_message(frame)
                        assert isinstance(msg, messages.Telemetry)
                        self.report_interval = msg.interval_s
                        self.told[msg.interval_s] += 1
                        self.interval_changed.set()
                    elif kind == "netmap":
                        self._logged_in(t0, "full map")
                        logged_in = True
                        self.serial = _full_serial(frame)
                        await acks.ack(self.serial)
                    elif kind == "delta":
                        msg = messages.decode_server_message(frame)
                        assert isinstance(msg, messages.Delta)
                        d = msg.delta
                        if not logged_in and d.is_empty and d.base_serial == d.serial == self.serial:
                            self._logged_in(t0, "current")  # the answer to a login holding the current map
                            logged_in = True
                        self.serial = d.serial
                        await acks.ack(msg.delta.serial)
                        if self.waiting_for is not None and any(
                                p.peer_id == self.waiting_for for p in msg.delta.upsert):
                            self.got_at = time.time()
                            self.frame = frame
                            if not self.got.is_set():
                                self.got.set()
                                if self.on_got is not None:
                                    self.on_got()
            finally:
                if sender is not None:
                    sender.cancel()
                await acks.close()
            raise ConnectionClosed(ws.close_rcvd, ws.close_sent)

    def _logged_in(self, t0: float, how: str) -> None:
        self.full_at.append(time.time())
        if self.first_login_s is None:
            self.first_login_s = time.perf_counter() - t0
        self.attempt = 0
        self.logins[how] += 1
        self.has_full.set()

    async def _stats(self, ws) -> None:
        """ServerLink._senders' counters: every `report_interval`, counted from the last report."""
        started = last = time.monotonic()
        while True:
            self.interval_changed.clear()
            wait = last + self.report_interval - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(self.interval_changed.wait(), wait)
                except TimeoutError:
                    pass
                continue
            last = time.monotonic()
            await ws.send(messages.encode(messages.Stats(last - started, ())))


async def _wait_all(agents: list[Agent], timeout: float) -> None:
    """Until every agent got the change: one countdown, not a task per agent (the harness's own
    work shares the two cores with the servers it measures)."""
    waiting = sum(not a.got.is_set() for a in agents)
    all_got = asyncio.Event()

    def one_more() -> None:
        nonlocal waiting
        waiting -= 1
        if waiting <= 0:
            all_got.set()

    for a in agents:
        a.on_got = one_more
    if waiting <= 0:
        all_got.set()
    try:
        await asyncio.wait_for(all_got.wait(), timeout)
    finally:
        for a in agents:
            a.on_got = None


async def _client(conn, specs: list[tuple], stats_interval: float) -> None:
    """One client process: run its agents, answer the parent's commands."""
    raise_nofile()
    agents = [Agent(i, seed, bytes.fromhex(ca), url, net, stats_interval) for i, seed, ca, url, net in specs]
    sem = asyncio.Semaphore(max(1, int(os.environ.get("BENCH_IN_FLIGHT", "50"))
                                // max(1, int(os.environ.get("BENCH_PROCS", "1")))))

    async def start(a: Agent):
        async with sem:  # first logins: a bounded number in flight, then each agent on its own
            a.task = asyncio.create_task(a.run())
            await a.has_full.wait()

    await asyncio.gather(*(start(a) for a in agents))
    conn.send([a.first_login_s for a in agents])
    while True:
        cmd = await asyncio.to_thread(conn.recv)
        if cmd is None:
            break
        match cmd[0]:
            case "change":  # {network: new peer id}
                for a in agents:
                    a.got.clear()
                    a.waiting_for = cmd[1][a.network]
                conn.send("ready")
                try:
                    await _wait_all(agents, 120)
                except TimeoutError:
                    pass
                conn.send(([a.got_at if a.got.is_set() else None for a in agents],
                           sorted({hashlib.sha256(a.frame).hexdigest() for a in agents if a.got.is_set()})))
            case "intervals":  # how often each agent reports now (its own, or the server's `telemetry`)
                conn.send(dict(collections.Counter(a.report_interval for a in agents)))
            case "mark":  # before the restart: forget the closes and logins so far
                for a in agents:
                    a.closes.clear()
                    a.logins.clear()
                conn.send("marked")
            case "reconnected":  # (since, timeout): each agent's first full map after `since`
                since, timeout = cmd[1], cmd[2]
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if all(a.full_at and a.full_at[-1] > since for a in agents):
                        break
                    await asyncio.sleep(0.2)
                firsts = [next((t for t in a.full_at if t > since), None) for a in agents]
                closes: collections.Counter[str] = collections.Counter()
                for a in agents:
                    closes.update(a.closes)
                    closes.update({f"login answered: {k}": v for k, v in a.logins.items()})
                conn.send((firsts, dict(closes)))
    for a in agents:
        a.stopped = True
        a.task.cancel()
    await asyncio.gather(*(a.task for a in agents), return_exceptions=True)


def _client_main(conn, specs: list[tuple], stats_interval: float, gc_threshold: int = 0) -> None:
    """A client process runs its agents on the event loop the agent runs on (nodeagent/evloop.py:
    uvloop when installed, SHADOWMESH_EVENT_LOOP=asyncio for the standard one). `gc_threshold`:
    its garbage collector set as a server process's (meshadmin/gc_tuning.py), 0 left as Python's."""
    _die_with_parent()
    gc_tuning.configure(gc_threshold)
    evloop.run(_client(conn, specs, stats_interval), evloop.selected())


def _die_with_parent() -> None:
    """A client process ends when the bench does, also when the bench is killed: its agents would
    otherwise go on reconnecting to the stopped servers and load the box of the next run."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the bench was gone before the line above
        os._exit(1)


def _enroll_over_http(port: int, src: str, token: str, name: str, public: bytes) -> None:
    body = json.dumps({"token": token, "name": name, "public_key": base64.b64encode(public).decode()})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(src, 0))
    try:
        conn.request("POST", "/api/enroll", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 201 and resp.status != 200:
            raise RuntimeError(f"enrollment {name} refused: {resp.status} {data[:200]!r}")
    finally:
        conn.close()


def _push_histograms(port: int) -> dict[str, dict[str, float]]:
    """One server's push histograms from its /metrics (loopback: no credentials): name -> {le: count}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("shadowmesh_netmap_push_seconds", "shadowmesh_netmap_push_last_agent_seconds"):
            out[family.name] = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    return out


def _server_push_shares(before: list[dict], after: list[dict]) -> dict[str, dict[str, float]]:
    """Server side of the measured changes, all processes together: per histogram, the share of
    observations at or below each bucket bound (change committed -> frame handed to the transport)."""
    shares: dict[str, dict[str, float]] = {}
    for name in ("shadowmesh_netmap_push_seconds", "shadowmesh_netmap_push_last_agent_seconds"):
        counts: collections.Counter[str] = collections.Counter()
        for b, a in zip(before, after, strict=True):
            for le, v in a.get(name, {}).items():
                counts[le] += v - b.get(name, {}).get(le, 0.0)
        total = counts.get("+Inf", 0.0)
        if total:
            shares[name.removeprefix("shadowmesh_netmap_")] = {
                le: round(v / total, 4) for le, v in counts.items() if le != "+Inf"} | {"count": total}
    return shares


class Daphnes:
    """The server processes, each on its own port; `restart()` stops them all, starts them again."""

    def __init__(self, count: int, env: dict, log_path: str | None, backlog: int | None = None):
        self.env, self.ports, self.backlog = env, [_free_port() for _ in range(count)], backlog
        self.log = open(log_path or os.devnull, "ab")
        self.procs: list[subprocess.Popen] = []

    def _listen(self, port: int) -> list[str]:
        """Daphne's -b/-p (Twisted's listen backlog of 50), or an endpoint with --backlog."""
        if self.backlog is None:
            return ["-b", "127.0.0.1", "-p", str(port)]
        return ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={self.backlog}"]

    def start(self) -> float:
        self.procs = [subprocess.Popen(
            [str(Path(sys.executable).parent / "daphne"), *self._listen(port), "meshadmin.asgi:application"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT) for port in self.ports]
        for port, proc in zip(self.ports, self.procs, strict=True):
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError("daphne exited at start")
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
        return time.time()

    def stop(self) -> float:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return time.time()

    def rss_kib(self) -> list[int]:
        return [_rss_kib(p.pid) for p in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.log.close()


def _services(state: str, reuse: bool = False) -> dict[str, str]:
    """PostgreSQL and Redis from scripts/services.sh (the test suite's): a new cluster, or the one
    kept in `state` started again (same data and ports; Redis starts empty)."""
    script = ["bash", str(ROOT / "scripts" / "services.sh")]
    if reuse:
        subprocess.run([*script, "start-pg", state], check=True)
        subprocess.run([*script, "start-redis", state], check=True)
        pg, redis = (Path(state, f"{x}.port").read_text().strip() for x in ("pg", "redis"))
        return {"DATABASE_URL": f"postgres://shadowmesh@127.0.0.1:{pg}/shadowmesh",
                "REDIS_URL": f"redis://127.0.0.1:{redis}/0"}
    out = subprocess.run([*script, "start", state], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v
    return env


async def _change(c: int, nets: list[dict], pipes, ports: list[int], name: str, gap: float = 0.0) -> dict:
    """One change (an enrollment in every network at once), after `gap` seconds of quiet. Network j's
    enrollment goes to ports[j % len(ports)]: one server, or each process in turn as a balancer would."""
    await asyncio.sleep(gap)
    publics = {n["name"]: mldsa.MLDSA87PrivateKey.generate().public_key().public_bytes_raw() for n in nets}
    waiting = {k: peer_id(v) for k, v in publics.items()}
    for p in pipes:
        p.send(("change", waiting))
    for p in pipes:
        assert await asyncio.to_thread(p.recv) == "ready"
    loop = asyncio.get_running_loop()
    # a thread per request: asyncio.to_thread's default pool has cpu_count + 4 threads (6 here), and
    # the requests past those used to wait for the first ones to finish before they were sent
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(nets)) as pool:
        t0 = time.time()
        spans = await asyncio.gather(*(
            loop.run_in_executor(pool, _timed_enroll, ports[j % len(ports)], change_address(c, j),
                                 n["change_token"], f"{name}{j}", publics[n["name"]])
            for j, n in enumerate(nets)))
    replies = [await asyncio.to_thread(p.recv) for p in pipes]
    got = [x for times, _ in replies for x in times]
    return {"after": [g - t0 for g in got if g is not None], "missing": sum(g is None for g in got),
            "http": max(end - start for start, end in spans),
            "http_sent_s": max(start - t0 for start, _ in spans),  # the last request's send, after t0
            "http_done_s": max(end - t0 for _, end in spans),  # the last answer, after t0
            "signatures": len({h for _, frames in replies for h in frames})}


async def _watch(redis_url: str, network_ids: list[int], settled: asyncio.Event) -> None:
    """What an open dashboard page of each network does (meshadmin/dashboard/consumers.py): a
    `telemetry.watch` lease sent to the network's agent group, renewed every WATCH_RENEW_S."""
    from channels_redis.core import RedisChannelLayer

    from meshadmin.realtime.groups import TELEMETRY_WATCH, agents_group
    from meshadmin.realtime.stats_rate import WATCH_RENEW_S, WATCH_S

    layer = RedisChannelLayer(hosts=[redis_url])
    try:
        while True:
            for pk in network_ids:
                await layer.group_send(agents_group(pk), {"type": TELEMETRY_WATCH, "network": pk,
                                                          "seconds": WATCH_S})
            settled.set()
            await asyncio.sleep(WATCH_RENEW_S)
    finally:
        await layer.close_pools()


def _timed_enroll(port: int, src: str, token: str, name: str, public: bytes) -> tuple[float, float]:
    """When the request was started and when its answer was read (wall clock)."""
    t = time.time()
    _enroll_over_http(port, src, token, name, public)
    return t, time.time()


async def run_one(n: int, changes: int, log_path: str | None = None, wal: bool = False,
                  warmup: int = 1, client_procs: int = 2, backend: str = "sqlite", daphnes: int = 1,
                  networks: int = 1, restart: bool = False, stats_interval: float = 0.0,
                  state: str | None = None, reconnect_wait: float = 180.0, in_flight: int = 50,
                  seed_only: bool = False, backlog: int | None = None, change_gap: float = 0.0,
                  per_address: int = 1, watch: int = 0, change_requests: str = "first",
                  client_gc: int = 0) -> dict:
    result: dict = {"agents": n, "client_procs": client_procs, "client_loop": evloop.selected(),
                    "client_gc_threshold": client_gc,
                    "server_gc_threshold": os.environ.get("SHADOWMESH_GC_THRESHOLD", "default"),
                    "backend": backend, "daphnes": daphnes, "change_requests": change_requests,
                    "listen_backlog": backlog or 50, "change_gap_s": change_gap,
                    "networks": networks, "stats_interval_s": stats_interval, "sqlite_wal": wal,
                    "nofile": raise_nofile(), "loadavg_start": _load()}
    # (PostgreSQL may still be writing in its directory as it stops: the results matter more)
    with tempfile.TemporaryDirectory(prefix="sm-bench-agents-", ignore_cleanup_errors=True) as scratch:
        tmp = state or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        reuse = state is not None and (Path(tmp) / "nets.json").exists()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(SHADOWMESH_DATA_DIR=f"{tmp}/data", SHADOWMESH_LOG_LEVEL="INFO" if log_path else "WARNING",
                   DJANGO_SETTINGS_MODULE="meshadmin.settings")
        if backend == "postgres":
            os.chmod(tmp, 0o755)
            env.update(_services(f"{tmp}/services", reuse or Path(tmp, "services", "pg.port").exists()))
        elif daphnes != 1:
            raise SystemExit("--daphnes > 1 needs --backend postgres (the in-memory layer is per process)")
        servers = Daphnes(daphnes, env, log_path, backlog)
        procs: list = []  # the client processes
        try:
            manage = [sys.executable, "manage.py"]
            if reuse:  # the same nodes as the run that made the state (its seeds), other runs' changes on top
                seeds = (Path(tmp) / "seeds").read_bytes()
                kept = json.loads((Path(tmp) / "nets.json").read_text())
                if len(seeds) != 32 * n or len(kept) != networks:
                    raise SystemExit(f"--state {tmp} holds {len(seeds) // 32} agents: give the same --agents "
                                     "and --networks as the run that made it")
                result["state_reused"] = True
                # the earlier runs' changes out: the networks hold the agents' nodes only (they grew by
                # a node per change and run, which made every run slower than the one before)
                subprocess.run([*manage, "shell", "-v0", "-c", FORGET_CHANGES], cwd=ROOT, env=env, check=True)
            else:
                resume = state is not None and (Path(tmp) / "nets.json.part").exists()
                subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
                if wal and backend == "sqlite":  # WAL is kept in the database file: the server inherits it
                    import sqlite3

                    with sqlite3.connect(Path(tmp) / "data" / "db.sqlite3") as db:
                        db.execute("PRAGMA journal_mode=WAL")
                if resume:
                    seeds = (Path(tmp) / "seeds").read_bytes()
                else:
                    seeds = os.urandom(32 * n)
                    (Path(tmp) / "seeds").write_bytes(seeds)
                t = time.perf_counter()
                seed_env = {**env, "BENCH_SEEDS": f"{tmp}/seeds", "BENCH_NETWORKS": str(networks),
                            "BENCH_AGENTS": str(n), "BENCH_OUT": f"{tmp}/nets.json.part"}
                if not resume:
                    subprocess.run([*manage, "shell", "-c", SEED_NETWORKS], cwd=ROOT, check=True,
                                   env=seed_env)
                parts = min(4, networks) if backend == "postgres" else 1  # SQLite: one writer at a time
                seeders = [subprocess.Popen([*manage, "shell", "-c", SEED_ENROLL], cwd=ROOT,
                                            env={**seed_env, "BENCH_PART": f"{j}/{parts}"})
                           for j in range(parts)]
                try:
                    if [p.wait() for p in seeders] != [0] * parts:
                        raise RuntimeError("enrolling the agents' nodes failed")
                finally:
                    for p in seeders:
                        if p.poll() is None:
                            p.kill()
                os.replace(Path(tmp) / "nets.json.part", Path(tmp) / "nets.json")
                result["enroll_setup_s"] = round(time.perf_counter() - t, 1)
            if seed_only:
                return result
            nets = json.loads((Path(tmp) / "nets.json").read_text())
            stamp = f"{os.getpid()}-{int(time.time())}-"  # names of the changes' nodes: new in every run
            servers.start()
            await asyncio.sleep(1.0)
            rss_before = servers.rss_kib()
            urls = [f"ws://127.0.0.1:{p}/ws/agent/" for p in servers.ports]
            specs = [(i, seeds[32 * i: 32 * i + 32], nets[i % networks]["ca_public_key"], urls[i % daphnes],
                      nets[i % networks]["name"]) for i in range(n)]
            ctx = multiprocessing.get_context("spawn")
            os.environ["BENCH_PROCS"] = str(client_procs)
            os.environ["BENCH_IN_FLIGHT"] = str(in_flight)
            os.environ["BENCH_PER_ADDRESS"] = str(per_address)
            result["first_logins_in_flight"] = in_flight
            result["agents_per_address"] = per_address
            pipes = []
            result["loadavg_connect"] = _load()
            started = time.perf_counter()
            for k in range(client_procs):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=_client_main,
                                   args=(theirs, specs[k::client_procs], stats_interval, client_gc))
                proc.start()
                procs.append(proc)
                pipes.append(ours)
            connect_s = [x for p in pipes for x in await asyncio.to_thread(p.recv)]
            result["all_connected_s"] = round(time.perf_counter() - started, 2)
            await asyncio.sleep(2.0)
            rss_after = servers.rss_kib()
            result.update(
                connect_p50_ms=round(1000 * _pct(connect_s, 0.5), 1),
                connect_p99_ms=round(1000 * _pct(connect_s, 0.99), 1),
                rss_before_mib=[round(x / 1024, 1) for x in rss_before],
                rss_after_mib=[round(x / 1024, 1) for x in rss_after],
                rss_per_socket_kib=round((sum(rss_after) - sum(rss_before)) / n, 1),
                loadavg_changes=_load(),
            )
            watcher = None
            if watch:
                if backend != "postgres":
                    raise SystemExit("--watch needs --backend postgres (the bench reaches the servers "
                                     "through Redis)")
                shell = subprocess.run([*manage, "shell", "-v0", "-c", NETWORK_IDS], cwd=ROOT, env=env,
                                       check=True, capture_output=True, text=True)
                ids = json.loads(shell.stdout.strip().splitlines()[-1])  # (the shell may say more first)
                settled = asyncio.Event()
                watcher = asyncio.create_task(_watch(env["REDIS_URL"], [ids[x["name"]] for x in nets[:watch]],
                                                     settled))
                await asyncio.wait_for(settled.wait(), 30)
                await asyncio.sleep(3.0)  # each server process tells the watched networks' agents at once
                result["watched_networks"] = watch
            # progress on stderr, for a profiler to start at the changes (the servers' pids too)
            print(f"changes start: daphnes {' '.join(str(p.pid) for p in servers.procs)}",
                  file=sys.stderr, flush=True)
            # the change's requests: all to the first process, or spread over them as the agents' sockets are
            api = servers.ports if change_requests == "spread" else servers.ports[:1]
            runs = [await _change(c, nets, pipes, api, f"n{stamp}{c}-", change_gap)
                    for c in range(warmup)]
            scraped = [await asyncio.to_thread(_push_histograms, port) for port in servers.ports]
            runs += [await _change(c, nets, pipes, api, f"n{stamp}{c}-", change_gap)
                     for c in range(warmup, warmup + changes)]
            result["server_push_shares"] = _server_push_shares(
                scraped, [await asyncio.to_thread(_push_histograms, port) for port in servers.ports])
            cold, warm = runs[:warmup], runs[warmup:]
            flat = [x for r in warm for x in r["after"]]
            result.update(
                change_p50_ms=round(1000 * _pct(flat, 0.5), 1),
                change_p99_ms=round(1000 * _pct(flat, 0.99), 1),
                change_max_ms=round(1000 * max(flat), 1) if flat else None,
                change_last_ms=[round(1000 * max(r["after"]), 1) if r["after"] else None for r in warm],
                change_first_ms=[round(1000 * min(r["after"]), 1) if r["after"] else None for r in warm],
                change_missing=[r["missing"] for r in warm],
                cold_change_missing=[r["missing"] for r in cold],
                enroll_http_ms=[round(1000 * r["http"], 1) for r in warm],
                enroll_last_sent_ms=[round(1000 * r["http_sent_s"], 1) for r in warm],
                enroll_last_answer_ms=[round(1000 * r["http_done_s"], 1) for r in warm],
                cold_change_last_ms=[round(1000 * max(r["after"]), 1) if r["after"] else None for r in cold],
                cold_enroll_http_ms=[round(1000 * r["http"], 1) for r in cold],
                delta_signatures=[r["signatures"] for r in warm],
            )
            intervals: collections.Counter[float] = collections.Counter()
            for p in pipes:
                p.send(("intervals",))
            for p in pipes:
                intervals.update(await asyncio.to_thread(p.recv))
            held = sorted(intervals.elements())
            result["stats_intervals_s"] = (
                {"min": held[0], "p50": _pct(held, 0.5), "max": held[-1]} if held else {})
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            if restart:
                for p in pipes:
                    p.send(("mark",))
                for p in pipes:
                    assert await asyncio.to_thread(p.recv) == "marked"
                result["loadavg_restart"] = _load()
                stop_at = time.time()
                stopped_at = servers.stop()
                listening_at = servers.start()
                for p in pipes:
                    p.send(("reconnected", stop_at, reconnect_wait))
                replies = [await asyncio.to_thread(p.recv) for p in pipes]
                firsts = [x for times, _ in replies for x in times]
                back = [t - stop_at for t in firsts if t is not None]
                since_up = [t - listening_at for t in firsts if t is not None]
                closes: collections.Counter[str] = collections.Counter()
                for _, c in replies:
                    closes.update(c)
                result["restart"] = {
                    "stop_s": round(stopped_at - stop_at, 2),
                    "listening_after_stop_s": round(listening_at - stop_at, 2),
                    "reconnected": len(back), "waited_s": reconnect_wait,
                    "not_reconnected": sum(t is None for t in firsts),
                    "after_stop_s": {q: round(_pct(back, p), 2) for q, p in
                                     (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
                    "after_listening_s": {q: round(_pct(since_up, p), 2) for q, p in
                                          (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
                    "within_60s_of_listening": sum(1 for t in since_up if t <= 60),
                    "per_10s_after_listening": _histogram(since_up, 10),
                    "closes_and_failures": dict(closes),
                    "rate_limited_4429": closes.get(f"close {int(CloseCode.RATE_LIMITED)}", 0),
                    "loadavg_end": _load(),
                }
                await asyncio.sleep(2.0)
                after = await _change(warmup + changes, nets, pipes, api, f"b{stamp}")
                result["after_restart_change"] = {
                    "p50_ms": round(1000 * _pct(after["after"], 0.5), 1),
                    "p99_ms": round(1000 * _pct(after["after"], 0.99), 1),
                    "last_ms": round(1000 * max(after["after"]), 1) if after["after"] else None,
                    "missing": after["missing"], "signatures": after["signatures"],
                }
            for p in pipes:
                p.send(None)
            for proc in procs:
                await asyncio.to_thread(proc.join, 60)
                if proc.is_alive():
                    proc.kill()
        finally:
            for proc in procs:  # after an error above they still run (and the exit would wait for them)
                if proc.is_alive():
                    proc.kill()
            servers.close()
            if backend == "postgres":
                subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop", f"{tmp}/services"],
                               check=False)  # stops; a --state directory keeps the data for the next run
    result["loadavg_end"] = _load()
    return result


def _histogram(values: list[float], width: float) -> dict[str, int]:
    out: collections.Counter[str] = collections.Counter()
    for v in values:
        lo = int(max(v, 0.0) // width) * int(width)
        out[f"{lo}-{lo + int(width)}s"] += 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0].split("-")[0])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--changes", type=int, default=5, help="measured changes per N")
    parser.add_argument("--warmup", type=int, default=1, help="changes made first and reported apart")
    parser.add_argument("--change-gap", type=float, default=0.0,
                        help="seconds of quiet before each change (0: each starts as soon as the last agent "
                             "has the one before)")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the agents run in")
    parser.add_argument("--wal", action="store_true", help="put the SQLite database in WAL mode first")
    parser.add_argument("--daphne-log", help="keep the servers' log (level INFO) in this file")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="embedded (SQLite, in-memory layer) or PostgreSQL + Redis (scripts/services.sh)")
    parser.add_argument("--daphnes", type=int, default=1, help="Daphne processes (more than 1: postgres)")
    parser.add_argument("--networks", type=int, default=1, help="networks the agents are spread over")
    parser.add_argument("--restart", action="store_true", help="restart the servers and time the reconnect")
    parser.add_argument("--backlog", type=int, help="Daphne's listen backlog (an -e endpoint); unset: -b/-p, "
                        "Twisted's default of 50")
    parser.add_argument("--stats-interval", type=float, default=2.0,
                        help="each agent sends an empty stats report this often until its server's "
                        "`telemetry` says otherwise, as the agent does (2 s, the agent's own; 0: never)")
    parser.add_argument("--watch", type=int, default=0,
                        help="networks watched during the changes, as an open dashboard page of each "
                        "does (telemetry.watch through Redis; --backend postgres)")
    parser.add_argument("--change-requests", choices=("first", "spread"), default="first",
                        help="where a change's enrollment requests go: all to the first server process "
                        "(default, as in every run recorded before the option), or network j's to process "
                        "j mod --daphnes, as a balancer in front of them would")
    parser.add_argument("--client-gc-threshold", type=int, default=0,
                        help="set each client process's garbage collector as a server process's "
                        "(meshadmin/gc_tuning.py: start-up frozen, the youngest generation collected "
                        "every N new objects). 2,500 agents in one process make a heap no agent has "
                        "(it holds one socket), and walking it took a fifth of the client processes' "
                        "CPU. Default 0: Python's collector, as in every run recorded before the option")
    parser.add_argument("--agents-per-address", type=int, default=1,
                        help="agents that share one source address (default 1: each its own)")
    parser.add_argument("--in-flight", type=int, default=50,
                        help="first logins in flight at once, over all client processes")
    parser.add_argument("--reconnect-wait", type=float, default=180.0,
                        help="after the restart, wait this long (from the stop) for every agent")
    parser.add_argument("--state", help="keep the enrolled nodes (and PostgreSQL) in this directory and "
                        "reuse them in later runs of the same --agents/--networks (enrolling 10,000 "
                        "takes minutes)")
    parser.add_argument("--seed-only", action="store_true",
                        help="with --state: enroll the nodes into the state directory and stop (the "
                        "seeding is a fixture: run it niced, outside the benchmark lock)")
    args = parser.parse_args()
    if args.state and len(args.agents) != 1:
        parser.error("--state goes with one --agents value")
    if args.seed_only and not args.state:
        parser.error("--seed-only needs --state")
    results = []
    for n in args.agents:
        r = asyncio.run(run_one(n, args.changes, args.daphne_log, args.wal, args.warmup, args.client_procs,
                                args.backend, args.daphnes, args.networks, args.restart, args.stats_interval,
                                args.state, args.reconnect_wait, args.in_flight, args.seed_only,
                                backlog=args.backlog, change_gap=args.change_gap,
                                per_address=args.agents_per_address, watch=args.watch,
                                change_requests=args.change_requests, client_gc=args.client_gc_threshold))
        if args.seed_only:
            print(json.dumps(r), flush=True)
            return 0
        results.append(r)
        print(json.dumps(r), flush=True)
    out = ROOT / "bench" / "results" / f"controlplane-agents-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results}, indent=2) + "\n")
    print(f"{'agents':>7} {'connect p50/p99 ms':>19} {'all connected s':>16} {'KiB/socket':>11} "
          f"{'change p50/p99/max ms':>22} {'restart back p50/p99/max s (after listening)'}")
    for r in results:
        back = r.get("restart", {}).get("after_listening_s", {})
        print(f"{r['agents']:>7} {r['connect_p50_ms']:>9}/{r['connect_p99_ms']:<9} "
              f"{r['all_connected_s']:>16} {r['rss_per_socket_kib']:>11} "
              f"{r['change_p50_ms']:>8}/{r['change_p99_ms']}/{r['change_max_ms']:<9} "
              f"{back.get('p50', '-')}/{back.get('p99', '-')}/{back.get('max', '-')}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
