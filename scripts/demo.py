"""`make demo`: the server on its embedded defaults plus the seed's 4-node mesh in namespaces.

    uk        public hub   198.18.0.3   (relays for the others)
    belgium                198.18.0.4   cannot reach starlink directly (dropped both ways)
    starlink               198.18.0.5   -> belgium <-> starlink goes through uk, as in the seed
    mac                    198.18.0.8

The server (daphne) listens on 127.0.0.1 for the browser and on 198.18.0.1, the host end of a
bridge this script creates, for the agents. Each node is a network namespace with a veth on that
bridge; each enrolls with its own one-time token (`shadowmesh-agent enroll`) and then runs
`shadowmesh-agent up --state-dir`. Ctrl-C stops the agents and the server and removes every
namespace, link and device the demo made (a record of them is kept in the state directory, so
`python scripts/demo.py --clean` can also remove the leftovers of a run that was killed).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
STATE = Path(os.environ.get("SHADOWMESH_DEMO_DIR", ROOT / "data" / "demo"))
RECORD = STATE / "created.json"
HOST_IP = "198.18.0.1"
NODES = [  # name, underlay address, public hub?
    ("uk", "198.18.0.3", True),
    ("belgium", "198.18.0.4", False),
    ("starlink", "198.18.0.5", False),
    ("mac", "198.18.0.8", False),
]
BLOCKED = ("belgium", "starlink")  # these two only meet through the hub


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def manage(*args: str, env: dict) -> str:
    return sh(PY, str(ROOT / "manage.py"), *args, env=env).stdout


class Demo:
    def __init__(self, port: int) -> None:
        self.port = port
        self.tag = secrets.token_hex(2)
        self.bridge = f"smdemo{self.tag}"
        self.created: dict[str, list[str]] = {"netns": [], "links": []}
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ)
        self.env.setdefault("SHADOWMESH_DATA_DIR", str(ROOT / "data"))
        hosts = self.env.get("SHADOWMESH_ALLOWED_HOSTS", "")
        self.env["SHADOWMESH_ALLOWED_HOSTS"] = ",".join(
            h for h in (hosts, "127.0.0.1", "localhost", HOST_IP) if h
        )

    # --- bookkeeping: everything we create is written down before it exists
    def _remember(self, kind: str, name: str) -> None:
        self.created[kind].append(name)
        RECORD.write_text(json.dumps(self.created))

    # --- network
    def build_network(self) -> None:
        taken = set(sh("ip", "netns", "list").stdout.split())
        clash = [n for n, _, _ in NODES if n in taken]
        if clash:
            raise SystemExit(
                f"demo: namespaces {', '.join(clash)} already exist; if a previous demo left them, "
                f"run `{PY} scripts/demo.py --clean`"
            )
        self._remember("links", self.bridge)
        # a fixed MAC, so the bridge does not change address as the veths are added
        mac = "02:" + ":".join(secrets.token_hex(1) for _ in range(5))
        sh("ip", "link", "add", self.bridge, "address", mac, "type", "bridge")
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for name, addr, _ in NODES:
            self._remember("netns", name)
            sh("ip", "netns", "add", name)
            host_end, ns_end = f"smd{self.tag}{name[:4]}", f"smn{self.tag}{name[:4]}"
            self._remember("links", host_end)
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            sh("ip", "link", "set", ns_end, "netns", name)
            sh("ip", "link", "set", host_end, "master", self.bridge, "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", name, "link", "set", ns_end, "name", "eth0")
            sh("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
        a, b = (dict((n, ip) for n, ip, _ in NODES)[x] for x in BLOCKED)
        for ns, other in ((BLOCKED[0], b), (BLOCKED[1], a)):
            for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                sh("ip", "netns", "exec", ns, "iptables", "-A", chain, flag, other, "-j", "DROP")

    # --- server
    def start_server(self) -> str:
        manage("migrate", "--noinput", env=self.env)
        manage("collectstatic", "--noinput", env=self.env)
        out = manage("createadmin", "--reset", env=self.env).strip().splitlines()
        password = out[-1]
        log = open(STATE / "server.log", "ab")
        self.procs.append(subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "daphne"),
             "-e", f"tcp:port={self.port}:interface=127.0.0.1",
             "-e", f"tcp:port={self.port}:interface={HOST_IP}",
             "meshadmin.asgi:application"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/schema", timeout=1)
                return password
            except OSError:
                if self.procs[-1].poll() is not None:
                    raise SystemExit(f"demo: the server exited; see {STATE / 'server.log'}") from None
                time.sleep(0.3)
        raise SystemExit(f"demo: the server did not answer within 30 s; see {STATE / 'server.log'}")

    # --- agents
    def forget_old_nodes(self) -> None:
        """A previous demo's nodes (same names, keys now gone) are deleted, so a rerun of `make demo`
        on the same database enrolls afresh instead of meeting stale peers with our names.
        Revoked ones stay on record (they cannot be deleted, and they reach no one)."""
        names = [n for n, _, _ in NODES]
        manage("shell", "-c",
               "from meshadmin.mesh.models import Node\n"
               "from meshadmin.mesh.services.nodes import delete_node\n"
               f"for node in Node.objects.filter(name__in={names!r}).exclude(status='revoked'):\n"
               "    delete_node(node, actor='make demo')\n", env=self.env)

    def start_agents(self) -> dict[str, str]:
        self.forget_old_nodes()
        overlay: dict[str, str] = {}
        for name, addr, public in NODES:
            flags = ["--public"] if public else []
            token = manage("createtoken", *flags, env=self.env).strip().splitlines()[-1]
            state = STATE / name
            if state.exists():
                shutil.rmtree(state)
            sh("ip", "netns", "exec", name, PY, "-m", "nodeagent", "enroll",
               "--server", f"http://{HOST_IP}:{self.port}", "--token", token, "--name", name,
               "--state-dir", str(state), "--endpoint", f"{addr}:8443", *flags)
            log = open(STATE / f"{name}.log", "ab")
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", name, PY, "-m", "nodeagent", "up", "--state-dir", str(state)],
                stdout=log, stderr=subprocess.STDOUT))
            overlay[name] = self.status(name).get("node", {}).get("overlay_ip", "?")
        return overlay

    def status(self, name: str, wait: float = 20) -> dict:
        deadline = time.monotonic() + wait
        while True:
            out = sh("ip", "netns", "exec", name, PY, "-m", "nodeagent", "status",
                     "--state-dir", str(STATE / name), "--json", check=False)
            if out.returncode == 0:
                return json.loads(out.stdout)
            if time.monotonic() > deadline:
                print(f"demo: {name}'s agent is not answering: {out.stderr.strip()} "
                      f"(log: {STATE / name}.log)", file=sys.stderr)
                return {}
            time.sleep(0.5)

    # --- teardown
    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        clean()


def clean() -> None:
    """Remove what the record says a demo created (namespaces take their devices with them)."""
    if not RECORD.exists():
        return
    created = json.loads(RECORD.read_text())
    for ns in created.get("netns", []):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for link in created.get("links", []):
        subprocess.run(["ip", "link", "del", link], capture_output=True)
    RECORD.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("SHADOWMESH_DEMO_PORT", "8000")))
    ap.add_argument("--clean", action="store_true", help="remove what a killed demo left behind, then exit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root (it creates network namespaces and TUN devices)", file=sys.stderr)
        return 4
    STATE.mkdir(parents=True, exist_ok=True)
    if args.clean:
        clean()
        return 0
    clean()  # leftovers of a killed run, if any
    demo = Demo(args.port)
    stop = {"now": False}

    def on_signal(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        demo.build_network()
        password = demo.start_server()
        overlay = demo.start_agents()
        print()
        print(f"  Dashboard:  http://127.0.0.1:{args.port}/   user admin   password {password}")
        print(f"  API schema: http://127.0.0.1:{args.port}/api/schema")
        for name, addr, public in NODES:
            print(f"  {name:9s} underlay {addr:12s} overlay {overlay.get(name, '?'):12s}"
                  f"{' public hub' if public else ''}")
        some = next((ip for n, ip in overlay.items() if n == "starlink"), "10.10.10.x")
        print(f"\n  Try:  ip netns exec belgium ping {some.split('/')[0]}   (relayed through uk)")
        print(f"        ip netns exec belgium {PY} -m nodeagent status --state-dir {STATE / 'belgium'}")
        print("\n  Ctrl-C stops the mesh and removes its namespaces.\n", flush=True)
        while not stop["now"]:
            for p in demo.procs:
                if p.poll() is not None:
                    print(f"demo: a process exited ({p.args[-3:]}); logs in {STATE}", file=sys.stderr)
                    stop["now"] = True
            time.sleep(0.5)
    finally:
        print("demo: stopping and cleaning up", file=sys.stderr)
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
