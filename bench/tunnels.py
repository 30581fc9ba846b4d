"""How each measured tunnel is brought up between the two namespaces of a `Pair` (bench/pair.py).

Every `start_*` function returns a `Tunnel` (the address to aim iperf3/ping at, the overlay device's
MTU and version string) or raises `Skip` with the reason (tool missing, daemon died, no ping within the
deadline). The tunnel's own default MTU is used everywhere unless a variant says otherwise.

Overlays (inside the namespaces only):
  wireguard-go 10.78.0.0/24 · nebula 10.79.0.0/24 · ShadowMesh 10.10.10.0/24 (its default)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pair import Node, Pair

ROOT = Path(__file__).resolve().parent.parent


class Skip(Exception):
    """This tunnel cannot be measured in this run; the message says why."""


@dataclass
class Tunnel:
    name: str
    target: str  # address on node B that node A sends to
    mtu: int | None = None
    version: str = ""
    up_s: float | None = None  # from starting the daemons to the first answered ping
    notes: list[str] = field(default_factory=list)
    status: Path | None = None  # ShadowMesh: folder of a.toml / b.toml, whose `status --json` is saved
    agent: Path | None = None  # ShadowMesh: the agent executable that runs this tunnel


def wait_ping(pair: Pair, target: str, deadline_s: float, watch: list[subprocess.Popen] = ()) -> float:
    """Seconds until `target` answers a ping from node A.

    Raises Skip after `deadline_s`, or as soon as one of the `watch`ed daemons exits."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        if pair.a.run("ping", "-c", "1", "-W", "0.3", target, timeout=5, check=False).returncode == 0:
            return time.monotonic() - t0
        dead = [p for p in watch if p.poll() is not None]
        if dead:
            raise Skip(f"daemon exited with status {dead[0].returncode} before the tunnel came up")
        time.sleep(0.1)
    raise Skip(f"no ping reply from {target} within {deadline_s:.0f} s")


def device_mtu(node: Node, address: str) -> int | None:
    """MTU of the interface in `node` that carries `address`."""
    out = node.run("ip", "-j", "addr", "show", timeout=10, check=False).stdout
    for link in json.loads(out or "[]"):
        if any(a.get("local") == address for a in link.get("addr_info", [])):
            return link.get("mtu")
    return None


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return ((proc.stdout or proc.stderr).strip().splitlines() or [""])[0]


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Skip(f"not installed: {', '.join(missing)}")


# ---------------------------------------------------------------------- raw veth
def start_veth(pair: Pair, work: Path, deadline_s: float) -> Tunnel:
    t = Tunnel("veth", pair.b.underlay_ip, version="kernel veth")
    t.up_s = wait_ping(pair, t.target, deadline_s)
    t.mtu = device_mtu(pair.a, pair.a.underlay_ip)
    return t


# ---------------------------------------------------------------------- wireguard-go
def start_wireguard_go(pair: Pair, work: Path, deadline_s: float) -> Tunnel:
    _need("wireguard-go", "wg")
    d = work / "wireguard-go"
    d.mkdir(parents=True, exist_ok=True)
    keys = {}
    for side in "ab":
        priv = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
        pub = subprocess.run(
            ["wg", "pubkey"], input=priv, capture_output=True, text=True, check=True
        ).stdout.strip()
        (d / f"{side}.key").write_text(priv + "\n")
        os.chmod(d / f"{side}.key", 0o600)
        keys[side] = pub
    # The control socket lives in the shared /var/run/wireguard, so the device name is unique per run.
    dev = {"a": f"{pair.lab.prefix}wga", "b": f"{pair.lab.prefix}wgb"}
    env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
    t0 = time.monotonic()
    procs = []
    for side, node in (("a", pair.a), ("b", pair.b)):
        sock = Path(f"/var/run/wireguard/{dev[side]}.sock")
        pair.lab.remove_on_exit(sock)
        procs.append(pair.lab.spawn(node, "wireguard-go", "-f", dev[side], log=d / f"{side}.log", env=env))
    for side in "ab":
        sock = Path(f"/var/run/wireguard/{dev[side]}.sock")
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        else:
            raise Skip(f"wireguard-go did not create {sock}: {(d / f'{side}.log').read_text()[-400:]}")
    plan = (
        ("a", pair.a, "b", pair.b, "10.78.0.1", "10.78.0.2"),
        ("b", pair.b, "a", pair.a, "10.78.0.2", "10.78.0.1"),
    )
    for side, node, other, onode, mine, theirs in plan:
        node.run(
            "wg",
            "set",
            dev[side],
            "private-key",
            str(d / f"{side}.key"),
            "listen-port",
            "51820",
            "peer",
            keys[other],
            "endpoint",
            f"{onode.underlay_ip}:51820",
            "allowed-ips",
            f"{theirs}/32",
        )
        node.run("ip", "addr", "add", f"{mine}/24", "dev", dev[side])
        node.run("ip", "link", "set", dev[side], "up")  # MTU: wireguard-go's default
    t = Tunnel("wireguard-go", "10.78.0.2", version=_deb_version("wireguard-go"))
    wait_ping(pair, t.target, deadline_s, procs)
    t.up_s = time.monotonic() - t0
    t.mtu = device_mtu(pair.a, "10.78.0.1")
    return t


# ---------------------------------------------------------------------- nebula
_NEBULA_YML = """\
pki:
  ca: {d}/ca.crt
  cert: {d}/{n}.crt
  key: {d}/{n}.key
static_host_map:
  "10.79.0.1": ["{lh_underlay}:4242"]
lighthouse:
  am_lighthouse: {am_lh}
  interval: 60
  hosts: {hosts}
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: false
tun:
  disabled: false
  dev: {dev}
{mtu_line}logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
"""


def start_nebula(pair: Pair, work: Path, deadline_s: float, mtu: int | None = None) -> Tunnel:
    """Node A is the lighthouse. `mtu=None` keeps nebula's own default (1300)."""
    _need("nebula", "nebula-cert")
    name = "nebula" if mtu is None else f"nebula-mtu{mtu}"
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    cert = ["nebula-cert"]
    subprocess.run(
        [*cert, "ca", "-name", "bench-ca", "-out-crt", "ca.crt", "-out-key", "ca.key"],
        cwd=d,
        check=True,
        capture_output=True,
    )
    for n, ip in (("a", "10.79.0.1/24"), ("b", "10.79.0.2/24")):
        subprocess.run(
            [
                *cert,
                "sign",
                "-ca-crt",
                "ca.crt",
                "-ca-key",
                "ca.key",
                "-name",
                n,
                "-ip",
                ip,
                "-out-crt",
                f"{n}.crt",
                "-out-key",
                f"{n}.key",
            ],
            cwd=d,
            check=True,
            capture_output=True,
        )
    mtu_line = f"  mtu: {mtu}\n" if mtu else ""
    for n, am_lh, hosts in (("a", "true", "[]"), ("b", "false", '["10.79.0.1"]')):
        (d / f"{n}.yml").write_text(
            _NEBULA_YML.format(
                d=d,
                n=n,
                lh_underlay=pair.a.underlay_ip,
                am_lh=am_lh,
                hosts=hosts,
                dev=f"{pair.lab.prefix}nb{n}",
                mtu_line=mtu_line,
            )
        )
    t0 = time.monotonic()
    procs = [
        pair.lab.spawn(node, "nebula", "-config", str(d / f"{n}.yml"), log=d / f"{n}.log")
        for n, node in (("a", pair.a), ("b", pair.b))
    ]
    t = Tunnel(name, "10.79.0.2", version=_deb_version("nebula"))
    wait_ping(pair, t.target, deadline_s, procs)
    t.up_s = time.monotonic() - t0
    t.mtu = device_mtu(pair.a, "10.79.0.1")
    return t


# ---------------------------------------------------------------------- ShadowMesh
_SM_TOML = """\
[node]
name = "bench-{me}"
interface = "{dev}"
control_socket = "{sock}"
private_key = "{me}/node.key"
overlay_ip = "{overlay}/24"
listen_ip = "{underlay}"
control_port = 8443
udp_port = 9443
public = false

[[peer]]
public_key = "{peer}/node.pub"
overlay_ip = "{peer_overlay}"
endpoint = "{peer_underlay}"
"""


POLICY_RULES = 100  # the leg `shadowmesh-policy100`: the same agents enforcing this many rules


def policy_toml(count: int = POLICY_RULES, a: str = "10.10.10.1", b: str = "10.10.10.2") -> str:
    """A [policy] of `count` rules (default deny) for the bench's two nodes: three let the
    measurement through (a -> b TCP and UDP port 5201, iperf3's; ICMP a -> b, ping's; b's replies
    are replies), the others are decoys of every shape the rule index handles (host and wider
    prefixes on both ends, single ports, small and wide ranges, udp, icmp, any, IPv6) that match
    none of the measured packets. The same text goes into both nodes' files."""
    if count < 3:
        raise ValueError("the policy needs at least the three rules the measurement uses")
    rules = [
        (f'["{a}"]', f'["{b}"]', "tcp", "5201"),
        (f'["{a}"]', f'["{b}"]', "udp", "5201"),
        (f'["{a}"]', f'["{b}"]', "icmp", ""),
    ]
    for i in range(count - 3):
        shape = i % 6
        if shape == 0:  # another host of the overlay to b, one port
            rules.append((f'["10.10.10.{10 + i % 200}"]', f'["{b}"]', "tcp", str(1000 + i)))
        elif shape == 1:  # a wider source to b, a small range that is not 5201
            rules.append((f'["10.20.{i % 250}.0/24"]', f'["{b}"]', "tcp", f"{6000 + i}-{6010 + i}"))
        elif shape == 2:  # a to a subnet that is not b, udp, a wide range
            rules.append((f'["{a}"]', f'["192.168.{i % 250}.0/24"]', "udp", "10000-20000"))
        elif shape == 3:  # a /16 to another prefix, any protocol
            rules.append((f'["10.{30 + i % 200}.0.0/16"]', f'["172.16.{i % 250}.0/24"]', "any", ""))
        elif shape == 4:  # icmp between other hosts
            rules.append((f'["10.10.10.{100 + i % 100}"]', f'["10.10.10.{50 + i % 40}"]', "icmp", ""))
        else:  # IPv6
            rules.append((f'["fd00:{i:x}::/64"]', f'["fd00:beef::{i:x}"]', "tcp", "443"))
    out = ['[policy]', 'default = "deny"', '']
    for src, dst, proto, ports in rules:
        out += ["[[policy.rule]]", f"from = {src}", f"to = {dst}", f'proto = "{proto}"']
        if ports:
            out.append(f'ports = "{ports}"')
        out.append("")
    return "\n".join(out)


def agent_binary() -> Path:
    return Path(os.environ.get("SHADOWMESH_AGENT", ROOT / ".venv" / "bin" / "shadowmesh-agent"))


def reference_agent() -> Path:
    """The agent of another build for a same-run A/B (leg `shadowmesh-ref`): SHADOWMESH_AGENT_REF,
    e.g. the .venv/bin/shadowmesh-agent of a `git worktree` checked out at the older commit."""
    ref = os.environ.get("SHADOWMESH_AGENT_REF")
    if not ref:
        raise Skip("SHADOWMESH_AGENT_REF is not set (the reference build's shadowmesh-agent)")
    return Path(ref)


def agent_env(extra: str = "") -> dict:
    """Our environment plus SM_AGENT_ENV ("NAME=value ..."), e.g. the data path's A/B knobs, and
    then `extra` (the same form: the `shadowmesh-knob` leg's SM_KNOB_ENV)."""
    env = dict(os.environ)
    for item in (os.environ.get("SM_AGENT_ENV", "") + " " + extra).split():
        name, _, value = item.partition("=")
        env[name] = value
    return env


def knob_env() -> str:
    """The leg `shadowmesh-knob`: this build with SM_KNOB_ENV added (a same-run A/B of a knob)."""
    knobs = os.environ.get("SM_KNOB_ENV", "").strip()
    if not knobs:
        raise Skip("SM_KNOB_ENV is not set (the knobs of the leg shadowmesh-knob, \"NAME=value ...\")")
    return knobs


def start_shadowmesh(pair: Pair, work: Path, deadline_s: float, *, name: str = "shadowmesh",
                     agent: Path | None = None, policy: str = "", knobs: str = "") -> Tunnel:
    """`shadowmesh-agent up --config` in each namespace (serverless mode:
    docs/operations.md#serverless-configuration). `agent`: another build's executable (A/B);
    `policy`: a [policy] table appended to both nodes' files."""
    agent = agent or agent_binary()
    if not agent.exists():
        raise Skip(f"{agent} does not exist (install the project into .venv)")
    help_text = subprocess.run([str(agent), "--help"], capture_output=True, text=True, timeout=30)
    if help_text.returncode != 0 or " up" not in help_text.stdout:
        raise Skip(f"{agent} has no `up` command yet: {(help_text.stdout + help_text.stderr).strip()[-400:]}")
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    for side in "ab":
        kg = subprocess.run(
            [str(agent), "keygen", "--out", str(d / side)], capture_output=True, text=True, timeout=60
        )
        if kg.returncode != 0:
            raise Skip(f"keygen failed ({kg.returncode}): {kg.stderr.strip()[-400:]}")
    overlay = {"a": "10.10.10.1", "b": "10.10.10.2"}
    nodes = {"a": pair.a, "b": pair.b}
    for me, peer in (("a", "b"), ("b", "a")):
        (d / f"{me}.toml").write_text(
            _SM_TOML.format(
                me=me,
                dev=f"{pair.lab.prefix}sm{me}",
                sock=d / f"{me}.sock",
                overlay=overlay[me],
                underlay=nodes[me].underlay_ip,
                peer=peer,
                peer_overlay=overlay[peer],
                peer_underlay=nodes[peer].underlay_ip,
            )
            + (f"\n{policy}" if policy else "")
        )
    t0 = time.monotonic()
    procs = {
        side: pair.lab.spawn(
            nodes[side],
            str(agent),
            "up",
            "--config",
            str(d / f"{side}.toml"),
            log=d / f"{side}.log",
            env=agent_env(knobs),
        )
        for side in "ab"
    }
    extra = (os.environ.get("SM_AGENT_ENV", "") + " " + knobs).strip()
    t = Tunnel(
        name,
        overlay["b"],
        version=_agent_version(agent) + (f" with {extra}" if extra else "")
        + (f" enforcing {policy.count('[[policy.rule]]')} rules" if policy else ""),
        status=d,
        agent=agent,
    )
    try:
        wait_ping(pair, t.target, deadline_s, list(procs.values()))
    except Skip as e:
        logs = "\n".join(
            f"--- agent {s} ({d / f'{s}.log'}):\n{(d / f'{s}.log').read_text()[-1500:]}" for s in "ab"
        )
        raise Skip(f"{e}\n{logs}") from None
    t.up_s = time.monotonic() - t0
    t.mtu = device_mtu(pair.a, overlay["a"])
    return t


def shadowmesh_status(pair: Pair, folder: Path, side: str, agent: Path | None = None) -> dict | None:
    """`shadowmesh-agent status --json` of node `side` ("a" or "b"), None if it does not answer."""
    node = pair.a if side == "a" else pair.b
    config = str(folder / f"{side}.toml")
    agent = agent or agent_binary()
    proc = node.run(str(agent), "status", "--config", config, "--json", timeout=30, check=False)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return None


def _agent_version(agent: Path) -> str:
    """The commit the agent's code comes from (the checkout around its virtualenv), and whether its
    nodeagent/ has uncommitted changes."""
    tree = agent.resolve().parents[2] if agent.resolve().parent.name == "bin" else ROOT
    sha = _first_line(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "nodeagent"], capture_output=True, text=True
    ).stdout.strip()
    return f"shadowmesh {sha or '?'}" + (" + uncommitted nodeagent changes" if dirty else "")


def _deb_version(pkg: str) -> str:
    line = _first_line(["dpkg-query", "-W", "-f", "${Version}", pkg])
    return f"{pkg} {line}" if line else pkg


STARTERS = {
    "veth": start_veth,
    "wireguard-go": start_wireguard_go,
    "nebula": start_nebula,
    "nebula-mtu1420": lambda pair, work, dl: start_nebula(pair, work, dl, mtu=1420),
    "shadowmesh": start_shadowmesh,
    "shadowmesh-ref": lambda pair, work, dl: start_shadowmesh(
        pair, work, dl, name="shadowmesh-ref", agent=reference_agent()
    ),
    "shadowmesh-knob": lambda pair, work, dl: start_shadowmesh(
        pair, work, dl, name="shadowmesh-knob", knobs=knob_env()
    ),
    "shadowmesh-policy100": lambda pair, work, dl: start_shadowmesh(
        pair, work, dl, name="shadowmesh-policy100", policy=policy_toml()
    ),
}
