"""Tunnel benchmark: raw veth, wireguard-go, nebula and ShadowMesh between two network namespaces.

Rounds are interleaved: round 1 starts, measures and stops every tunnel in turn, then round 2 does
the same, and so on, so a change in the machine's background load hits every tunnel alike. A tunnel
that cannot come up in round 1 is skipped for the rest of the run (the reason is recorded).

Run as root (what `make bench` does through bench/run.sh):
    .venv/bin/python bench/netbench.py
Environment knobs (defaults in brackets):
    RUNS [3]  DUR [10] (TCP s)  UDP_DUR [10]  UDP_RATE [300M]  UDP_LEN [1200]  PINGS [200]
    UDP_WINDOW [4M] (iperf3 -w for the UDP test; empty = the kernel default)
    TUNNELS ["veth wireguard-go nebula nebula-mtu1420 shadowmesh"]
    UP_TIMEOUT [15] (s until the first ping; ShadowMesh gets SM_UP_TIMEOUT [30])
    SM_AGENT_ENV [""] (extra environment for the agents, "NAME=value ...")
    SHADOWMESH_AGENT_REF (another build's shadowmesh-agent; add the leg `shadowmesh-ref` to TUNNELS
        for a same-run, interleaved A/B of two builds)
    SM_KNOB_ENV (knobs for the leg `shadowmesh-knob`: this build with these variables added, for a
        same-run A/B of a knob against `shadowmesh`, e.g. SM_KNOB_ENV="SHADOWMESH_EVENT_LOOP=asyncio")
    the leg `shadowmesh-policy100` (not in the default TUNNELS): the same agents enforcing a
        100-rule access policy, for an A/B against `shadowmesh`
    IDLE_S [3] (idle seconds before reading the tunnel's RSS)   RESULTS [bench/results]
Writes RESULTS/net-<stamp>.tsv (one row per run), RESULTS/net-<stamp>.json (machine, versions, MTUs,
RSS, skips, rows) and the tools' raw output under RESULTS/net-<stamp>/; prints a markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # lab/, the namespace lab, when run as `python bench/netbench.py`

import report  # noqa: E402
from measure import Knobs, loadavg, measure_run, rss_mb, tunnel_pids  # noqa: E402
from pair import Pair  # noqa: E402
from tunnels import STARTERS, Skip, shadowmesh_status  # noqa: E402

from lab import Lab, LabError  # noqa: E402

DEFAULT_TUNNELS = "veth wireguard-go nebula nebula-mtu1420 shadowmesh"
COLUMNS = [
    "tunnel",
    "run",
    "tcp_mbps",
    "tcp_retr",
    "udp_sent_mbps",
    "udp_mbps",
    "udp_loss_pct",
    "rtt_avg_ms",
    "rtt_p99_ms",
    "pings_ok",
    "tun_cpu_tcp",
    "tun_cpu_udp",
    "sys_busy_pct",
    "idle_busy_pct",
    "loadavg1",
    "loadavg1_end",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        sys.exit(f"{name}={raw!r} is not an integer")


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in Path("/etc/os-release").read_text().splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        "?",
    )
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
    }


def main() -> int:
    if os.geteuid() != 0:
        print("netbench needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "iperf3", "ping") if shutil.which(t) is None]
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install iperf3 iputils-ping iproute2)",
            file=sys.stderr,
        )
        return 2
    k = Knobs(
        dur=env_int("DUR", 10),
        udp_dur=env_int("UDP_DUR", 10),
        udp_rate=os.environ.get("UDP_RATE", "300M"),
        udp_len=env_int("UDP_LEN", 1200),
        udp_window=os.environ.get("UDP_WINDOW", "4M"),
        pings=env_int("PINGS", 200),
    )
    runs = env_int("RUNS", 3)
    names = os.environ.get("TUNNELS", DEFAULT_TUNNELS).split()
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        print(f"unknown tunnel(s) {unknown}; known: {' '.join(STARTERS)}", file=sys.stderr)
        return 2
    up_timeout = env_int("UP_TIMEOUT", 15)
    sm_up_timeout = env_int("SM_UP_TIMEOUT", 30)
    idle_s = env_int("IDLE_S", 3)

    results = Path(os.environ.get("RESULTS", HERE / "results"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logdir = results / f"net-{stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    doc: dict = {
        "stamp": stamp,
        "machine": machine(),
        "knobs": vars(k) | {"runs": runs},
        "loadavg_start": loadavg(),
        "tunnels": {},
        "rows": [],
    }
    log(
        f"{doc['machine']['cpu']} x{doc['machine']['nproc']}, kernel {doc['machine']['kernel']}; "
        f"runs {runs}, TCP {k.dur}s, UDP {k.udp_rate} x {k.udp_dur}s, {k.pings} pings; "
        f"load {doc['loadavg_start']}"
    )

    work = Path(tempfile.mkdtemp(prefix="smbench-"))
    try:
        with Lab() as lab:
            pair = Pair.build(lab)
            log(f"namespaces {pair.a.name} ({pair.a.underlay_ip}) <-> {pair.b.name} ({pair.b.underlay_ip})")
            for r in range(1, runs + 1):  # interleaved: each round measures every tunnel once
                for name in names:
                    info = doc["tunnels"].setdefault(name, {})
                    if "skipped" in info:
                        continue
                    deadline = sm_up_timeout if name.startswith("shadowmesh") else up_timeout
                    row = _one_round(pair, name, r, info, k, work / f"round{r}", logdir, deadline, idle_s)
                    if row:
                        doc["rows"].append(row)
                    elif r == 1:
                        info["skipped"] = info["failures"][-1]
    except (KeyboardInterrupt, SystemExit):
        log("interrupted: namespaces and processes removed, no results written")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

    doc["loadavg_end"] = loadavg()
    tsv = results / f"net-{stamp}.tsv"
    with open(tsv, "w") as out:
        out.write("\t".join(COLUMNS) + "\n")
        for row in doc["rows"]:
            out.write("\t".join(_fmt(row.get(c)) for c in COLUMNS) + "\n")
    (results / f"net-{stamp}.json").write_text(json.dumps(doc, indent=2, default=str))
    log(f"wrote {tsv} and {tsv.with_suffix('.json')}")
    print(report.net_markdown(doc))
    return 0


def _one_round(
    pair: Pair, name: str, r: int, info: dict, k: Knobs, work: Path, logdir: Path, deadline: int, idle_s: int
) -> dict | None:
    """Start `name`, measure it once, stop it. Returns the row, or None (reason in info["failures"])."""
    work.mkdir(parents=True, exist_ok=True)
    pair.lab.spawn(pair.b, "iperf3", "-s", log=logdir / f"{name}-{r}-iperf3-server.log")
    time.sleep(0.3)
    try:
        try:
            t = STARTERS[name](pair, work, deadline)
        except (Skip, LabError) as e:
            info.setdefault("failures", []).append(f"round {r}: {e}")
            log(f"SKIP {name} (round {r}): {e}")
            return None
        info.update(version=t.version, mtu=t.mtu)
        info.setdefault("up_s", []).append(round(t.up_s or 0, 3))
        time.sleep(idle_s)
        info.setdefault("rss_idle_rounds", []).append(_rss_per_node(pair))
        # the idle RSS reported is the largest seen, per node (conservative for the < 80 MB target)
        info["rss_idle_mb"] = [max(x[i] for x in info["rss_idle_rounds"]) for i in (0, 1)]
        log(f"{name} up in {t.up_s:.2f} s, overlay MTU {t.mtu}, idle RSS {info['rss_idle_rounds'][-1]} MB")
        row = measure_run(pair, name, t.target, r, k, logdir)
        row["up_s"] = t.up_s
        log("  " + report.row_summary(row))
        info["rss_after_mb"] = _rss_per_node(pair)
        if t.status:
            for side in "ab":
                status = shadowmesh_status(pair, t.status, side, t.agent)
                (logdir / f"{name}-{r}-status-{side}.json").write_text(json.dumps(status, indent=2))
                info[f"status_{side}"] = status
        return row
    finally:
        pair.lab.end_processes()  # the tunnel's daemons and the iperf3 server
        time.sleep(0.3)
        for f in work.glob(f"{name}*/*.log"):  # the daemons' logs; keys stay in the work folder
            shutil.copy(f, logdir / f"{f.parent.name}-{r}-{f.name}")


def _rss_per_node(pair: Pair) -> list[float]:
    """Resident memory of the tunnel's processes, per node (MB), as [A, B]."""
    all_tunnel = set(tunnel_pids(pair))
    return [round(rss_mb([p for p in pair.lab.pids(n) if p in all_tunnel]), 1) for n in (pair.a, pair.b)]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
