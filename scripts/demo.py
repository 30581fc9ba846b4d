"""`make demo`: the server on its embedded defaults plus the seed's 4-node mesh in namespaces, behind NATs.

    uk        public hub   198.18.0.3 on the "Internet" (relays for the others)
    belgium   behind an easy NAT (a cloud router)       198.18.0.4 -> LAN 198.18.4.0/24
    mac       behind a home NAT (easy)                  198.18.0.8 -> LAN 198.18.8.0/24
    starlink  behind a CGNAT pair: a home NAT behind the carrier's hard (port-per-destination)
              CGN                                       198.18.0.5 -> 198.18.5.0/24 -> LAN 198.18.6.0/24

Every pair first meets through uk; belgium and mac then punch a direct path (docs/nat.md); the
carrier's hard NAT keeps starlink's links to them on the relay (easy with hard: relayed, and the
status says why). The map shows which links are direct and which relayed.

The server (daphne) listens on 127.0.0.1 for the browser and on 198.18.0.1, the host end of a
bridge this script creates (the "Internet"), for the agents (SHADOWMESH_PUBLIC_URL names it, so
the dashboard's enroll command works from the namespaces). Each node is a network namespace
("<prefix>-uk", ..., with this run's prefix), on that bridge or behind its NAT boxes (lab/nat.py);
each enrolls with its own one-time token (`shadowmesh-agent enroll`) and then runs
`shadowmesh-agent up --state-dir --dns`: every node answers to `<name>.default.mesh`, and each
namespace's resolver (its own /etc/netns/<namespace>/resolv.conf, never the host's) asks its
agent. The network is built by the project's namespace lab (lab/): Ctrl-C or SIGTERM stops the
agents and the server and removes every namespace, link and device the demo made. A record of them
is kept in the state directory, so `python scripts/demo.py --clean` also removes the leftovers of a
run that was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lab/, the namespace lab, when run as `python scripts/demo.py`

from lab import Lab, LabError, Netns, sh, sweep  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
STATE = Path(os.environ.get("SHADOWMESH_DEMO_DIR", ROOT / "data" / "demo"))
RECORD = STATE / "created.json"
HOST_IP = "198.18.0.1"
NODES = [  # name, underlay address (its own, behind its NATs), public hub?
    ("uk", "198.18.0.3", True),
    ("belgium", "198.18.4.10", False),
    ("starlink", "198.18.6.10", False),
    ("mac", "198.18.8.10", False),
]
# each node's NAT boxes, outermost first: (role, kind, WAN address, LAN address)
NATS = {
    "belgium": [("belgium-nat", "easy", "198.18.0.4/24", "198.18.4.1/24")],
    "mac": [("mac-home", "easy", "198.18.0.8/24", "198.18.8.1/24")],
    "starlink": [("starlink-cgn", "hard", "198.18.0.5/24", "198.18.5.1/24"),
                 ("starlink-home", "easy", "198.18.5.2/24", "198.18.6.1/24")],
}


def progress(line: str) -> None:
    print(f"demo: {line}", flush=True)


def private_state_dir() -> None:
    """The demo's state directory (node keys, logs, the record of what it made) is the owner's
    only, whatever the umask; the server's data directory is made private by its settings."""
    STATE.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(STATE, 0o700)


def manage(*args: str, env: dict) -> str:
    return sh(PY, str(ROOT / "manage.py"), *args, env=env, timeout=300).stdout


class Demo:
    def __init__(self, lab: Lab, port: int) -> None:
        self.lab = lab
        self.port = port
        self.ns: dict[str, Netns] = {}
        self.env = dict(os.environ)
        self.env.setdefault("SHADOWMESH_DATA_DIR", str(ROOT / "data"))
        hosts = self.env.get("SHADOWMESH_ALLOWED_HOSTS", "")
        self.env["SHADOWMESH_ALLOWED_HOSTS"] = ",".join(
            h for h in (hosts, "127.0.0.1", "localhost", HOST_IP) if h
        )
        # the URL the nodes use: the dashboard's enroll command and QR code name it, whatever host
        # the browser opened the dashboard at
        self.env["SHADOWMESH_PUBLIC_URL"] = f"http://{HOST_IP}:{port}"

    # --- network
    def build_network(self) -> None:
        progress("building the network: the Internet bridge, NAT boxes, four namespaces")
        bridge = self.lab.host_bridge(f"{HOST_IP}/24")
        for name, addr, _ in NODES:
            self.ns[name] = self.lab.netns(name)
            uplink = bridge
            for role, kind, wan, lan in NATS.get(name, ()):
                uplink = self.lab.nat(role, uplink, wan=wan, lan=lan, kind=kind)
            if uplink is bridge:
                bridge.join(self.ns[name], f"{addr}/24", dev="eth0")
            else:
                uplink.attach(self.ns[name], f"{addr}/24", dev="eth0")
            boxes = " behind ".join(f"{k} NAT {r}" for r, k, _w, _l in reversed(NATS.get(name, ())))
            progress(f"  {name}: {addr}{' behind ' + boxes if boxes else ' (public)'}")
            # the namespace's own resolv.conf: `up --dns` rewrites this one, never the host's
            self.lab.resolv_conf(self.ns[name], "# demo namespace: no resolver beyond the mesh's names\n")

    # --- server
    def start_server(self) -> str:
        progress("migrating the database, collecting static files")
        manage("migrate", "--noinput", env=self.env)
        manage("collectstatic", "--noinput", env=self.env)
        password = manage("createadmin", "--reset", env=self.env).strip().splitlines()[-1]
        progress(f"starting the server on 127.0.0.1:{self.port} and {HOST_IP}:{self.port}")
        server = self.lab.spawn(
            None, str(ROOT / ".venv" / "bin" / "daphne"),
            "-e", f"tcp:port={self.port}:interface=127.0.0.1",
            "-e", f"tcp:port={self.port}:interface={HOST_IP}",
            "meshadmin.asgi:application", log=STATE / "server.log", cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/schema", timeout=1)
                return password
            except OSError:
                if server.poll() is not None:
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
            progress(f"enrolling {name} and starting its agent")
            flags = ["--public"] if public else []
            token = manage("createtoken", *flags, env=self.env).strip().splitlines()[-1]
            state = STATE / name
            if state.exists():
                shutil.rmtree(state)
            self.ns[name].run(PY, "-m", "nodeagent", "enroll",
                              "--server", f"http://{HOST_IP}:{self.port}", "--token", token, "--name", name,
                              "--state-dir", str(state), "--endpoint", f"{addr}:8443", *flags)
            self.lab.spawn(self.ns[name], PY, "-m", "nodeagent", "up", "--state-dir", str(state), "--dns",
                           log=STATE / f"{name}.log")
            overlay[name] = self.status(name).get("node", {}).get("overlay_ip", "?")
        return overlay

    def paths(self, overlay: dict[str, str], wait: float = 15) -> None:
        """Each node pings the others once (sessions through uk start at once), then the paths as the
        agents see them: punched pairs go direct within a few seconds, the rest stay relayed."""
        progress("pinging every pair once; waiting for the hole punches")
        nettools = str(ROOT / "lab" / "nettools.py")
        for name, _, _ in NODES:
            for other, _, _ in NODES:
                if other != name and overlay.get(other, "?") != "?":
                    self.ns[name].run(PY, nettools, "ping", overlay[other].split("/")[0], "--count", "1",
                                      "--timeout", "2", check=False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(1)
            peers = self.status("belgium").get("peers", [])
            if any(p.get("name") == "mac" and p.get("path") == "direct" for p in peers):
                break
        for name, _, _ in NODES:
            doc = self.status(name)
            nat = doc.get("node", {}).get("nat", {}).get("class", "?")
            links = []
            for p in doc.get("peers", []):
                if p.get("path") == "direct":
                    links.append(f"{p['name']} direct ({p.get('path_how') or '?'})")
                else:
                    via = p.get("path", "").removeprefix("relay:")
                    hub = next((q["name"] for q in doc.get("peers", []) if q["peer_id"] == via), via[:8])
                    why = (p.get("punch") or {}).get("reason") or "-"
                    links.append(f"{p['name']} via {hub} ({why})")
            progress(f"  {name:9s} NAT {nat:7s} " + ", ".join(sorted(links)))

    def status(self, name: str, wait: float = 20) -> dict:
        deadline = time.monotonic() + wait
        while True:
            out = self.ns[name].run(PY, "-m", "nodeagent", "status", "--state-dir", str(STATE / name),
                                    "--json", check=False)
            if out.returncode == 0:
                return json.loads(out.stdout)
            if time.monotonic() > deadline:
                print(f"demo: {name}'s agent is not answering: {out.stderr.strip()} "
                      f"(log: {STATE / name}.log)", file=sys.stderr)
                return {}
            time.sleep(0.5)

    def summary(self, password: str, overlay: dict[str, str]) -> None:
        print()
        print(f"  Dashboard:  http://127.0.0.1:{self.port}/   user admin   password {password}")
        print(f"  API schema: http://127.0.0.1:{self.port}/api/schema")
        for name, addr, public in NODES:
            print(f"  {name:9s} underlay {addr:13s} overlay {overlay.get(name, '?'):12s}"
                  f" namespace {self.ns[name].name}{'   public hub' if public else ''}")
        some = overlay.get("starlink", "10.10.10.x")
        belgium = self.ns["belgium"].name
        hint = "(through uk: starlink's CGN is hard)"
        print(f"\n  Try:  ip netns exec {belgium} ping {some.split('/')[0]}   {hint}")
        print(f"        ip netns exec {belgium} ping starlink.default.mesh   (the same, by name)")
        print(f"        ip netns exec {belgium} {PY} -m nodeagent status --state-dir {STATE / 'belgium'}")
        print("\n  Ctrl-C stops the mesh and removes its namespaces.\n", flush=True)

    def watch(self) -> None:
        """Until Ctrl-C (or SIGTERM), or until one of our processes exits."""
        while True:
            for p in self.lab.procs:
                if p.poll() is not None:
                    print(f"demo: a process exited ({p.args[-3:]}); logs in {STATE}", file=sys.stderr)
                    return
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("SHADOWMESH_DEMO_PORT", "8000")))
    ap.add_argument("--clean", action="store_true", help="remove what a killed demo left behind, then exit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root (it creates network namespaces and TUN devices)", file=sys.stderr)
        return 4
    private_state_dir()
    for line in sweep(RECORD):  # what a killed run left, if anything
        print(f"demo: {line}", file=sys.stderr)
    if args.clean:
        return 0
    if RECORD.exists():  # the sweep left it: that demo is still running
        print(f"demo: another demo is running ({RECORD}); stop it first", file=sys.stderr)
        return 1
    try:
        with Lab(record=RECORD, grace=10) as lab:
            try:
                demo = Demo(lab, args.port)
                demo.build_network()
                password = demo.start_server()
                overlay = demo.start_agents()
                demo.paths(overlay)
                demo.summary(password, overlay)
                demo.watch()
            except LabError as e:
                print(f"demo: {e}", file=sys.stderr)
                return 1
            finally:
                print("demo: stopping and cleaning up", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
